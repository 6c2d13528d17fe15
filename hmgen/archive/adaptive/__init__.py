"""Learning from the block while it is coded: components, each with its own state, predict and update, composed
by one predictor (after lpaq1's design, Mahoney 2007, rewritten).

logistic.py (squash and stretch), context.py (order-1..6 context maps), match.py (the match model), mixer.py (the
logistic mixer), apm.py (adaptive probability maps), predictor.py (all of them, composed: what the coder calls).
"""
