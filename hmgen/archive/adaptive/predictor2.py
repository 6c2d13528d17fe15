"""Methods 8 to 30's predictor and coder: the file's own statistics in the manner of the PAQ family (Mahoney's
lpaq and paq8: bit histories in hashed contexts, a match model, two layers of mixers, a chain of adaptive
probability maps; all of it rewritten here in integers), mixed with the network's next-byte distribution
(methods 8, 11, 14, 23, 28) or without it (9, 10, 12, 13, 15-22, 24-27, 29, 30: data that is not text, code and
markup it wins on). The sets of models: format 5 and 6's (models=2: methods 8-10), format 7's (models=3: 11-13, more contexts, see
TEXT3 and DATA3, and a mixer weight set chosen by brackets and markup), format 8's (models=4: 14-16, token
contexts, TEXT4 and DATA4, and an APM by the match state), format 9's (models=5 and 6: 17-20, without the
network only: the match's byte as a context, a set of contexts for data (DATA5) and one for text (TEXT5)),
format 10's (models=7: 21 and 22, models 5 made wide: a third input per context, see WIDE), format 11's
(models=8 to 10: 23-27, the "groups" and "runs" contexts join models 6, 7 and, with the network, 4: see LEVELS)
and format 12's (models=11 and 12: 28-30, format 11's for text made wide; alone with two word contexts more);
old archives decode with the models they were made with. Each bit is predicted, range-coded
(hmgen.archive.adaptive.coder) and learned from before the next, all in one compiled loop.

Per byte of a lane, the contexts (CONTEXTS: each a 64-bit hash of some of the bytes before it) select bit
histories in the hashed buckets (buckets.py); per bit every context gives the mixer two inputs: the stretched
probability its state map (history.py) learned for that history; and when the byte that last followed the
context (with its run length) agrees with the bits so far, that byte's next bit with a confidence learned per
run length. Then:
  network  stretch of its P(1) at the node (its mass under the 1-child over the node's), and the same
           probability refined by an APM in an order-2 context: the network adapted to the file;
  match    the bit of the byte that followed the longest earlier occurrence (MIN_MATCH bytes or more) of the
           lane's last bytes, with a confidence learned per match length;
  bias     a constant.
Four mixers (mixer2.py) weigh them, with weight sets chosen by (the network's confidence, the match state, the
depth), (the node, how far into its lane the byte is; format 7: how many brackets are open and whether in a
tag), (the previous byte, the depth) and (how many contexts
have seen the node, the match state, the depth); a last mixer weighs the four by (the network's confidence, the
depth). Three APMs refine its output in the contexts of the node, of the previous byte and of a hash of the
previous two; the final P(1) = (2 p_mix + p_apm1 + 2 p_apm2 + 3 p_apm3) / 8. Format 8 adds a fourth APM, by the
match's length and predicted bit (or that no match predicts the node) and the node:
P(1) = (p_mix + p_apm1 + 2 p_apm2 + 2 p_apm3 + 2 p_apm4) / 8. Format 9 without the network, where its confidence
is always 0: the first mixer's sets are chosen by (c2, the depth) instead, the last mixer's by (the match state,
the depth, whether half the contexts have seen the node), and the network's APM input becomes an order-2 direct
probability (its APM fed P = 1/2).

Lanes (hmgen.archive.format): at step t the lanes running code their t-th byte one after another, in lane order,
each seeing everything every earlier lane and step taught the shared models; the decoder does the same, so both
sides hold the same state at every bit. A lane's contexts reach back only into its own bytes.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hmgen.archive.adaptive import buckets, coder, history, mixer2
from hmgen.archive.adaptive.logistic import Curves, curves
from hmgen.jit import njit

# The contexts of a byte, by the bytes before it in its lane (c1 the last, w0 the word being read, w1 and w2
# the words before it (letters, and bytes >= 128, lower-cased), "above" the byte at the same column in the record
# before and "above2" two records up (a record: a line, or in data whose bytes recur at a fixed distance, a
# record of that length: see record_learn), ind1 / ind2 the two bytes that last followed c1 / c2 c1 anywhere;
# for code and markup (format 7's models, hmgen's own after paq8's nest and XML models): "nest" the innermost open
# bracket and how many are open, "indent" how many blanks begin the line, "tag" the markup state (text, tag name,
# inside a tag, inside a quoted value) and the name of the last tag); format 8's: "tok0" the token being read
# (letters, digits and _: a whole identifier, where w0 is its last word), "sep" the last byte before it that is
# neither a blank nor in a token (the . of an attribute, the ( of a call, the = of an assignment), "head" the
# line's first token; format 9's: "expect" the byte the match model predicts (or none) and "length" the match's
# length (to 15), after paq8's match model, whose predicted byte is a context too: its bit histories learn how far
# a match of that length is to be trusted and what comes when it fails; "predicted" the bytes that last followed
# c1, c2 c1 and c3..c1 (ind1, ind2, and ind3 likewise by c3..c1); format 11's "groups" the shape of the last six
# bytes: each byte's class (lower-case letter, capital, digit, blank, newline, byte >= 128; any other byte, the
# punctuation and brackets that give code and markup their shape, and control bytes, as itself), and "runs" the
# shape further back: the classes of the last six runs of bytes of one class (a word, a number, a run of blanks
# each count once; at most RUNS_BACK bytes back), after paq8's char-group model; format 12's "w0 after w1" the word
# being read with the word that last followed w1 (anywhere before, by a 16-bit hash of w1), and "w0 after w2 w1"
# with the word that last followed w2 w1 (hmgen's own, after paq8's indirect contexts, a word at a time):
CONTEXTS = ("c1", "c2 c1", "c3..c1", "c4..c1", "c5..c1", "c6..c1", "c8..c1", "w0 w1", "w0 c1", "w0 w1 w2",
            "c3 c2", "c4 c2", "above c1", "c1 ind1", "c2 c1 ind2", "above column", "w1 c1", "above above2",
            "above2 above c1", "nest c1", "indent column c1", "tag c2 c1", "c12..c1", "c20..c1", "w0 w2",
            "tok0 sep", "head tok0", "indent tok0", "nest tok0", "c3 c1", "expect length", "predicted", "groups",
            "runs", "w0 after w1", "w0 after w2 w1")
NCTX = len(CONTEXTS)
TEXT = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 16)   # method 8's contexts (the rest gained nothing on text)
DATA = tuple(range(19))                                  # ... 9 and 10's
# Format 7's (methods 11, 12 and 13): the contexts for code and markup and three longer ones join in; "c4 c2",
# "above c1" and "w1 c1" leave the network's (each under 0.03 % there), "above2 above c1" method 9's (it cost
# 0.05 % on text and data alike). Measured (benchmarks/RESULTS.md, "format 7"): -1.6 % with the network on 7
# prose, code and markup files, -1.7 % without on 11 code and markup files, -2.0 % on 6 held out; "c12..c1" pays
# only with the network.
TEXT3 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 19, 20, 21, 22, 23, 24)
DATA3 = tuple(range(18)) + (19, 20, 21, 23, 24)
# Format 8's (methods 14, 15 and 16): the token contexts join in, four with the network, three without ("nest
# tok0" paid only with it), and c6..c1 leaves the one-lane models (with the tokens in it cost size on code, markup
# and data; c5..c1 stays: without both a spreadsheet grew 11 %). benchmarks/RESULTS.md, "format 8".
TEXT4 = TEXT3 + (25, 26, 27, 28)
DATA4 = (0, 1, 2, 3, 4) + tuple(range(6, 18)) + (19, 20, 21, 23, 24, 25, 26, 27)
# Format 9's (methods 17-20, the file's models alone: models=5 for data, models=6 for text): "c3 c1", "expect
# length" and "predicted" join in, and each kind drops what its files showed it did not need, one context at a time
# (every one left costs at least 0.05 % when dropped): text drops "c1", "c2 c1", "c4 c2", "above c1", "above
# above2" and "indent column c1"; data "w0 w1", "w0 c1", "w0 w1 w2", "nest c1", "tag c2 c1", "tok0 sep" and
# "indent tok0". benchmarks/RESULTS.md, "format 9". With the network (method 14) they gained 0.1 % at three more
# contexts' time, on prose nothing: methods 11 and 14 stay.
DATA5 = (0, 1, 2, 3, 4, 6, 10, 11, 12, 13, 14, 15, 16, 17, 20, 23, 24, 26, 29, 30, 31)
TEXT5 = (2, 3, 4, 6, 7, 8, 9, 10, 13, 14, 15, 16, 19, 21, 23, 24, 25, 26, 27, 29, 30, 31)
# Format 10's (models 7): format 9's models for data (5) made *wide*: a third input per context (its state map's
# stretch again where the bit history is deterministic, only zeros or only ones seen, else 0: the mixer learns how
# far such a history is to be trusted, after paq8's context maps, which add it too). -0.6 % on data for ~6 % more
# time in the file's models; on text (-0.3 % alone, -0.4 % with the network) that time took compressing below
# 5 x paq8px's speed, so text keeps format 9's models. benchmarks/RESULTS.md, "format 10".
# Format 11's (models 8 to 10): "groups" and "runs" join format 10's models for data (9: DATA5, wide), format 9's
# for text (8: TEXT5) and format 8's with the network for code and markup (10: TEXT4). Measured
# (benchmarks/RESULTS.md, "format 11"), "groups" alone: -0.9 % on 15 code, markup and other text files alone,
# -0.8 % on 11 data files, -0.7 % with the network on 9 code and markup files; "runs" on top of it: -0.8 %, -0.3 %,
# -0.8 %. On prose with the network "groups" gained under 0.1 %: prose keeps method 11's models.
# Format 12's (models 11 and 12): format 11's models for text made wide, alone (11: with "w0 after w1" and "w0
# after w2 w1") and with the network (12: code and markup). Measured (benchmarks/RESULTS.md, "format 12"): wide
# -0.36 % on 15 code, markup and other text files alone, the two word contexts -0.22 % more; with the network on 9
# code and markup files wide -0.50 % (the word contexts gained nothing there). Data keeps format 11's (-0.1 % with
# the word contexts, not worth their time).
ACTIVE = {(2, True): TEXT, (2, False): DATA, (3, True): TEXT3, (3, False): DATA3, (4, True): TEXT4,
          (4, False): DATA4, (5, False): DATA5, (6, False): TEXT5, (7, False): DATA5,
          (8, False): TEXT5 + (32, 33), (9, False): DATA5 + (32, 33), (10, True): TEXT4 + (32, 33),
          (11, False): TEXT5 + (32, 33, 34, 35), (12, True): TEXT4 + (32, 33)}
                                                        # (models, with the network) -> the contexts
LEVELS = {7: (5, True), 8: (6, False), 9: (5, True), 10: (4, False), 11: (6, True), 12: (4, True)}
                              # models from format 10 on -> (the level whose code they run, wide)
WIDE = 7                      # format 10's models: level 5, wide
RUNS_KEPT, RUNS_BACK = 6, 128 # format 11's "runs": this many runs of a class, within this many bytes
MAX_RECORD = 4096             # record lengths detected: 2 .. MAX_RECORD bytes
RECORD_VOTES = 16             # a length that wins this many votes becomes the lane's record length
NET, BIAS, MATCH, NET_APM = 0, 1, 2, 3       # the mixer's inputs, then 2 per context from FIRST (3 when wide)
FIRST = 4
MIXERS, SETS, SETS2 = 4, 2048, 64
MIN_MATCH, MATCH_BITS, LENGTHS = 6, 20, 64
MAX_MISSES = 3                # a match that mispredicted more of its last 8 bytes is dropped
RUNS = 64                                     # run-length confidences per context
FIRST_W = 32 << 8                             # a context's main input starts at weight 1/8
APM_LIMIT = 127
APM_C1 = 256                                  # the APMs' rows: by node, by c1 and node, then two hashed ranges
APM_C2 = APM_C1 + 65536
MATCH_ROWS = (1 + 2 * LENGTHS) * 256          # format 8: a fourth APM, by the match state and node, after them


class State(NamedTuple):
    buckets: buckets.Buckets
    maps: history.StateMaps                 # one state map per context
    next: np.ndarray                        # (256, 2) the bit-history transitions
    n0: np.ndarray                          # (256,) a state's zeros
    n1: np.ndarray                          # (256,) ... and ones
    run_p: np.ndarray                       # (contexts used, RUNS) int64: P(the run's byte's bit is right), 16 bits
    mixer: mixer2.Mixer2
    match_table: np.ndarray                 # (2^MATCH_BITS,) int64: hash of MIN_MATCH bytes -> flat position + 1
    match_ptr: np.ndarray                   # (lanes,) int64: flat grid position of the byte the match predicts
    match_len: np.ndarray                   # (lanes,) int64: 0 = no match
    match_miss: np.ndarray                  # (lanes,) int64: the last 8 bytes the match mispredicted, as bits
    match_p: np.ndarray                     # (LENGTHS,) int64: P(the match's bit is right) << 10, per length
    apm: np.ndarray                         # (rows, 33) int32: p16 << 10 | count; rows APM_C1.. by c1 and node,
                                            # then two hashed ranges of `hashed` rows (APM_C2 by c2 c1 and node,
                                            # then the network's APM), rows 0..255 by the node; models 4:
                                            # then MATCH_ROWS by the match state and node
    words: np.ndarray                       # (lanes, 7) int64: hashes of w0, w1, w2; tok0, sep, head, whether
                                            # the head is complete (token_learn, models 4)
    lines: np.ndarray                       # (lanes, 2) int64: step where the lane's line starts, and the line before
    seen_at: np.ndarray                     # (lanes, 256, 3) int64: the last three steps each byte value was at (+1)
    record: np.ndarray                      # (lanes, 5) int64: record length (0: lines), two candidates and votes
    ind: np.ndarray                         # (65536 + 256,) int64: ind2 by c2 c1, then ind1 by c1
    use: np.ndarray                         # (contexts used,) int64: which of CONTEXTS, in input order
    hashes: np.ndarray                      # (NCTX,) int64: scratch, the current byte's context hashes
    slots: np.ndarray                       # (NCTX,) int64: ... the buckets of the contexts used
    runs: np.ndarray                        # (NCTX, 4) int64: ... their run entry, check, byte (-1: none), length
    sums: np.ndarray                        # (512,) int64: the network's mass under each node (leaf 256 + b)
    hist: np.ndarray                        # (9,) int64: scratch, the lane's last 8 bytes (hist[j] = c_j)
    curves: Curves
    nest: np.ndarray                        # (lanes, 33) int64: how many brackets are open, then the first 32
    markup: np.ndarray                      # (lanes, 4) int64: markup state (0 text, 1 tag name, 2 in a tag, 3 in
                                            # its quoted value), the tag name read so far, the last tag's, indent
    models: int                             # the level: 2: methods 8-10's models, 3: format 7's (11-13), 4:
                                            # format 8's (14-16), 5 and 6: format 9's for data (17, 18) and text
                                            # (19, 20); format 10's (21, 22) is level 5, wide
    cost: np.ndarray                        # (n + 1,) int64: cost[i + 1] the bits the block's byte i was coded in,
                                            # 1/1024 bit (the encoder's give-up rules read its running sum)
    bits: np.ndarray                        # (4097,) int64: 1024 log2(4096 / p), the cost of a bit coded at p
    ind3: np.ndarray                        # (65536,) int64: ind3, by a hash of c3..c1 (models 5 and 6)
    wide: bool                              # format 10's (models 7): three inputs per context
    follow: np.ndarray                      # (2 * 65536,) int64: the word that last followed w1, by a 16-bit hash
                                            # of w1, then w2 w1 (format 12's text models; else (2,))


def new(n: int, lanes: int, active=DATA3, models: int = 3) -> State:
    """The predictor of a block of n bytes coded in `lanes` lanes, with the contexts `active` (indices into
    CONTEXTS); models 2 is the one methods 8 to 10 were coded with (format 5 and 6), 3 format 7's, 4 format 8's,
    5 and 6 format 9's (without the network), 7 format 10's (5, wide), 8 to 10 format 11's and 11 and 12 format 12's
    (LEVELS: the level whose code each runs, and whether wide)."""
    models, wide = LEVELS.get(models, (models, False))
    per = 3 if wide else 2                                       # mixer inputs per context
    c = curves()
    t = history.table()
    row = (c.squash[np.clip((np.arange(33) - 16) * 128, -2047, 2047) + 2047] * 16) << 10 | 2
    hashed = 1 << min(16, max(10, max(n, 1).bit_length()))
    first = FIRST + per * np.arange(len(active))
    return State(buckets.new(n, len(active)), history.state_maps(len(active)), t.next, t.n0, t.n1,
                 np.full((len(active), RUNS), 3 << 14, np.int64),
                 mixer2.new(MIXERS, SETS, FIRST + per * len(active), SETS2, NET, first, FIRST_W,
                            *((mixer2.LR, mixer2.BOOST) if models == 2 else (mixer2.LR3, mixer2.BOOST3))),
                 np.zeros(1 << MATCH_BITS, np.int64), np.zeros(lanes, np.int64), np.zeros(lanes, np.int64),
                 np.zeros(lanes, np.int64),
                 np.full(LENGTHS, 3072 << 10, np.int64),
                 np.tile(row, (APM_C2 + 2 * hashed + (MATCH_ROWS if models >= 4 else 0), 1)).astype(np.int32),
                 np.zeros((lanes, 7), np.int64), np.zeros((lanes, 2), np.int64), np.zeros((lanes, 256, 3), np.int64),
                 np.zeros((lanes, 5), np.int64), np.zeros(65536 + 256, np.int64),
                 np.array(active, np.int64), np.zeros(NCTX, np.int64), np.zeros(NCTX, np.int64),
                 np.zeros((NCTX, 4), np.int64), np.zeros(512, np.int64), np.zeros(9, np.int64), c,
                 np.zeros((lanes, 33), np.int64), np.zeros((lanes, 4), np.int64), models,
                 np.zeros(n + 1, np.int64), BITS, np.zeros(65536 if models >= 5 else 1, np.int64),
                 wide, np.zeros(2 * 65536 if 34 in active or 35 in active else 2, np.int64))


BITS = np.array([0] + [round(1024 * math.log2(4096 / p)) for p in range(1, 4097)], np.int64)


@njit(cache=True, nogil=True, inline="always")
def mix2(a, b):
    """A 64-bit hash of a hash and a value (non-negative)."""
    return ((a + b + 1) * 0x1E3779B97F4A7C15 + (b << 7) + (a >> 23)) & 0x7FFFFFFFFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def is_letter(b):
    return (97 <= b <= 122) or (65 <= b <= 90) or b >= 128


@njit(cache=True, nogil=True, inline="always")
def apm_p(table, cx, p, stretch):
    """An APM's refinement of p (12 bits) in context cx -> (p', the bin that learns)."""
    s = stretch[p] + 2048
    i = s >> 7
    w = s & 127
    return ((np.int64(table[cx, i]) >> 10) * (128 - w) + (np.int64(table[cx, i + 1]) >> 10) * w) >> 11, i + (w >> 6)


@njit(cache=True, nogil=True, inline="always")
def apm_learn(table, cx, i, y):
    v = np.int64(table[cx, i])
    p, c = v >> 10, v & 1023
    p += (((65535 if y == 1 else 0) - p) * 2) // (2 * c + 3)
    if c < APM_LIMIT:
        c += 1
    table[cx, i] = np.int32((p << 10) | c)


@njit(cache=True, nogil=True, inline="always")
def char_group(b):
    """A byte's class for the "groups" context: 256 a lower-case letter, 257 a capital, 258 a digit, 259 a blank,
    260 a byte >= 128, 261 a newline; any other byte, itself."""
    if 97 <= b <= 122:
        return 256
    if 65 <= b <= 90:
        return 257
    if 48 <= b <= 57:
        return 258
    if b == 32:
        return 259
    if b >= 128:
        return 260
    return 261 if b == 10 else b


@njit(cache=True, nogil=True, inline="always")
def popcount8(v):
    c = 0
    for k in range(8):
        c += (v >> k) & 1
    return c


@njit(cache=True, nogil=True, inline="always")
def record_learn(seen_at, record, lane, byte, t):
    """Byte `byte` was at step t of the lane: when it recurs at one distance three times running, that distance
    gets a vote (two candidates are counted; a new distance replaces the one with fewer votes), and a candidate
    with RECORD_VOTES votes becomes the record length (hmgen's own rule, after the record models of paq8)."""
    p1, p2, p3 = seen_at[lane, byte, 0], seen_at[lane, byte, 1], seen_at[lane, byte, 2]
    r = t + 1 - p1
    if p3 > 0 and 1 < r <= MAX_RECORD and r == p1 - p2 and r == p2 - p3:
        if r == record[lane, 1]:
            record[lane, 2] += 1
        elif r == record[lane, 3]:
            record[lane, 4] += 1
        elif record[lane, 2] >= record[lane, 4]:
            record[lane, 3], record[lane, 4] = r, 1
        else:
            record[lane, 1], record[lane, 2] = r, 1
        for k in (1, 3):
            if record[lane, k + 1] >= RECORD_VOTES:
                if record[lane, 0] != record[lane, k]:
                    record[lane, 0] = record[lane, k]
                    record[lane, 2], record[lane, 4] = 0, 0
                else:
                    record[lane, k + 1] = RECORD_VOTES - 1
    seen_at[lane, byte, 2], seen_at[lane, byte, 1], seen_at[lane, byte, 0] = p2, p1, t + 1


@njit(cache=True, nogil=True, inline="always")
def nest_learn(nest, markup, lane, byte, col):
    """What byte `byte` (at column col of its line, counted before it) changes in the lane's brackets, markup
    state and indent."""
    if byte == 40 or byte == 91 or byte == 123:                   # ( [ {
        nest[lane, 0] += 1
        if nest[lane, 0] <= 32:
            nest[lane, nest[lane, 0]] = byte
    elif (byte == 41 or byte == 93 or byte == 125) and nest[lane, 0] > 0:
        nest[lane, 0] -= 1
    state = markup[lane, 0]
    if byte == 60:                                                # <
        markup[lane, 0], markup[lane, 1] = 1, 0
    elif byte == 62:                                              # >
        markup[lane, 0] = 0
        if markup[lane, 1] != 0:
            markup[lane, 2] = markup[lane, 1]
    elif state == 1:
        if byte == 32 or byte == 10:
            markup[lane, 0] = 2
        else:
            markup[lane, 1] = mix2(markup[lane, 1], byte)
    elif byte == 34 and state >= 2:                               # "
        markup[lane, 0] = 5 - state
    if byte == 10:
        markup[lane, 3] = 0
    elif (byte == 32 or byte == 9) and col == markup[lane, 3]:
        markup[lane, 3] += 1


@njit(cache=True, nogil=True, inline="always")
def token_learn(words, lane, byte):
    """What byte `byte` changes in the lane's token (words[lane, 3]), the byte before it (4), the line's first
    token (5; 6: whether it is complete)."""
    if is_letter(byte) or 48 <= byte <= 57 or byte == 95:
        words[lane, 3] = mix2(words[lane, 3], byte)
        return
    if words[lane, 3] != 0:
        if words[lane, 6] == 0:
            words[lane, 5], words[lane, 6] = words[lane, 3], 1
        words[lane, 3] = 0
    if byte != 32:
        words[lane, 4] = byte
    if byte == 10:
        words[lane, 5], words[lane, 6] = 0, 0


@njit(cache=True, nogil=True)
def code(S, net, has_net, grid, t0, t1, last, encode, cd):
    """Code steps t0 .. t1 - 1 of the block's lanes (grid (lanes, m); the last lane `last` bytes long): encoding
    reads each byte from grid, decoding writes it there. net (lanes, 256): the network's frequencies for step t0
    (used when has_net; then t1 = t0 + 1). -> the step reached: t1, or earlier when the encoder's buffer needs
    to grow (coder.grown), to be called again from there."""
    lanes, m = grid.shape
    flat = grid.reshape(-1)
    total = flat.shape[0]
    bk, maps, nxt, n0, n1, run_p, mx = S.buckets, S.maps, S.next, S.n0, S.n1, S.run_p, S.mixer
    bt, brun = bk.t, bk.runs
    sm_p = maps.p
    match_table, match_ptr, match_len, match_p = S.match_table, S.match_ptr, S.match_len, S.match_p
    match_miss = S.match_miss
    apm, words, lines, ind, use = S.apm, S.words, S.lines, S.ind, S.use
    ind3 = S.ind3
    follow = S.follow
    seen_at, record = S.seen_at, S.record
    nest, markup = S.nest, S.markup
    cost, bits = S.cost, S.bits
    hashes, slots, runs, sums, c = S.hashes, S.slots, S.runs, S.sums, S.hist
    squash, stretch = S.curves.squash, S.curves.stretch
    x, sel = mx.x, mx.sel
    mmask = match_table.shape[0] - 1
    nu = use.shape[0]
    match_rows = apm.shape[0] - (MATCH_ROWS if S.models >= 4 else 0)
    hmask = (match_rows - APM_C2) // 2 - 1
    net_rows = APM_C2 + hmask + 1
    per = 3 if S.wide else 2                        # mixer inputs per context
    shapes = False                                  # format 11's "groups" and "runs" in use (the models before it
    follows = False                                 # format 12's "w0 after w1" and "w0 after w2 w1" in use
    for a in range(nu):                             # skip their hashes)
        if use[a] == 32 or use[a] == 33:
            shapes = True
        if use[a] == 34 or use[a] == 35:
            follows = True
    alone5 = S.models >= 5 and not has_net          # format 9 without the network: the network's APM input is an
                                                    # order-2 direct probability (pn = 1/2), the mixers' sets differ
    for t in range(t0, t1):
        k = lanes if t < last else lanes - 1
        if encode and not coder.room(cd, 16 * k):
            return t
        for lane in range(k):
            # --- the byte's contexts -------------------------------------------------------------------
            if has_net:
                for b in range(256):
                    sums[256 + b] = np.int64(net[lane, b])
                for nd in range(255, 0, -1):
                    sums[nd] = sums[2 * nd] + sums[2 * nd + 1]
            for j in range(1, 9):
                c[j] = np.int64(grid[lane, t - j]) if t >= j else 0
            if t == 0:
                c[1] = 10                               # a lane starts as if after a newline
            c1, c2 = c[1], c[2]
            h = 0
            for j in range(1, 9):
                h = mix2(h, c[j])
                if j <= 6:
                    hashes[j - 1] = h + j
            hashes[6] = h + 8
            w0, w1, w2 = words[lane, 0], words[lane, 1], words[lane, 2]
            rl = record[lane, 0]
            if rl > 0:                                  # fixed-length records
                col = t % rl
                above = np.int64(grid[lane, t - rl]) if t >= rl else 0
                above2 = np.int64(grid[lane, t - 2 * rl]) if t >= 2 * rl else 0
            else:                                       # lines
                col = t - lines[lane, 0]
                up = lines[lane, 1] + col
                above = np.int64(grid[lane, up]) if up < lines[lane, 0] else 0
                above2 = 0
            i2 = c2 * 256 + c1
            hashes[7] = mix2(mix2(w0, w1), 107)
            hashes[8] = mix2(mix2(w0, c1), 108)
            hashes[9] = mix2(mix2(mix2(w0, w1), w2), 109)
            hashes[10] = mix2(mix2(c2, c[3]), 110)
            hashes[11] = mix2(mix2(c2, c[4]), 111)
            hashes[12] = mix2(mix2(above, c1), 112)
            hashes[13] = mix2(mix2(c1, ind[65536 + c1]), 113)
            hashes[14] = mix2(mix2(i2, ind[i2]), 114)
            hashes[15] = mix2(mix2(above, min(col, 255)), 115)
            hashes[16] = mix2(mix2(w1, c1), 116)
            hashes[17] = mix2(mix2(above, above2), 117)
            hashes[18] = mix2(mix2(mix2(above2, above), c1), 118)
            depth = nest[lane, 0]
            inner = nest[lane, min(depth, 32)] if depth > 0 else 0
            if S.models >= 3:
                hashes[19] = mix2(mix2(mix2(min(depth, 31), inner), c1), 120)
                hashes[20] = mix2(mix2(mix2(markup[lane, 3], min(col, 255)), c1), 121)
                hashes[21] = mix2(mix2(mix2(markup[lane, 0], markup[lane, 2]), i2), 122)
                hl = h
                for j in range(9, 21):
                    hl = mix2(hl, np.int64(grid[lane, t - j]) if t >= j else 0)
                    if j == 12:
                        hashes[22] = hl + 12
                hashes[23] = hl + 20
                hashes[24] = mix2(mix2(w0, w2), 125)
            if S.models >= 4:
                tok = words[lane, 3]
                hashes[25] = mix2(mix2(tok, words[lane, 4]), 127)
                hashes[26] = mix2(mix2(tok, words[lane, 5]), 128)
                hashes[27] = mix2(mix2(tok, markup[lane, 3]), 129)
                hashes[28] = mix2(mix2(mix2(tok, inner), min(depth, 31)), 130)
            expect = -1                                 # the match's byte, if its position is coded already
            if match_len[lane] > 0:
                q = match_ptr[lane]
                if q < total and (q % m < t or (q % m == t and q // m < lane)):
                    expect = np.int64(flat[q])
                else:
                    match_len[lane] = 0
            ml = min(match_len[lane], LENGTHS // 2 - 1) + (LENGTHS // 2 if match_miss[lane] != 0 else 0)
            j3 = 0
            if S.models >= 5:
                hashes[29] = mix2(mix2(c1, c[3]), 131)
                hashes[30] = mix2(mix2(expect + 1, min(match_len[lane], 15)), 132)
                j3 = (mix2(hashes[2], 7) >> 20) & 0xFFFF
                hashes[31] = mix2(mix2(mix2(ind[65536 + c1] & 255, ind[i2] & 255), ind3[j3] & 255), 133)
            if shapes:
                g = 0                                   # format 11: the classes of c6..c1
                for j in range(1, 7):
                    g = mix2(g, char_group(np.int64(grid[lane, t - j]) if t >= j else 0))
                hashes[32] = mix2(g, 134)
                r, kept, before = 0, 0, -1              # ... and of the last RUNS_KEPT runs of one class
                for j in range(1, min(t, RUNS_BACK) + 1):
                    cg = char_group(np.int64(grid[lane, t - j]))
                    if cg != before:
                        r, kept, before = mix2(r, cg), kept + 1, cg
                        if kept == RUNS_KEPT:
                            break
                hashes[33] = mix2(r, 140)
            if follows:
                hashes[34] = mix2(mix2(w0, follow[w1 & 0xFFFF]), 141)
                hashes[35] = mix2(mix2(w0, follow[65536 + (mix2(w2, w1) & 0xFFFF)]), 142)
            touched = np.int64(0)                       # prefetch every context's high-nibble bucket and
            for a in range(nu):                         # run entry (the loads overlap), then use them
                slot, chk = buckets.run_slot(bk, hashes[use[a]])
                runs[a, 0], runs[a, 1] = slot, chk
                touched += buckets.touch(bk, hashes[use[a]], 0) + brun[slot]
            sums[0] = touched                           # (sums[0] is unused: it keeps the loads)
            for a in range(nu):
                runs[a, 2], runs[a, 3] = buckets.run_of(bk, runs[a, 0], runs[a, 1])
            a1 = 0 if t < 16 else (1 if t < 128 else (2 if t < 1024 else 3))
            a2c = (c2 * 0x2F0B5 + c1) * 0x9E37
            # --- the byte's bits -----------------------------------------------------------------------
            byte = np.int64(grid[lane, t]) if encode else 0
            node = 1
            spent = 0
            for d in range(8):
                if d == 0 or d == 4:
                    nib = 0 if d == 0 else 16 + (node & 15)
                    for a in range(nu):
                        slots[a] = buckets.find(bk, hashes[use[a]], nib)
                if d == 3:                  # three bits of the high nibble known: prefetch the buckets of
                    touched = np.int64(0)   # both low nibbles it can lead to (5-10 % faster in all: RESULTS.md,
                                            # "format 12")
                    for a in range(nu):
                        touched += buckets.touch(bk, hashes[use[a]], 16 + ((2 * node) & 15))
                        touched += buckets.touch(bk, hashes[use[a]], 16 + ((2 * node + 1) & 15))
                    sums[0] = touched
                jn = (node & ((1 << (d & 3)) - 1)) | (1 << (d & 3))      # the node within the nibble, 1..15
                # inputs
                if has_net:
                    s, one = sums[node], sums[2 * node + 1]
                    pn = 2048 if s == 0 else min(4095, max(1, (one * 4096 + s // 2) // s))
                else:
                    pn = 2048
                xn = stretch[pn]
                x[NET] = xn
                x[BIAS] = 256
                anc = net_rows + ((a2c + node * 0x3C6EF) & hmask)
                x[NET_APM] = 0
                ia = 0
                if has_net or alone5:
                    pa, ia = apm_p(apm, anc, pn, stretch)
                    x[NET_APM] = stretch[min(4095, max(1, pa))]
                seen = 0
                for a in range(nu):
                    at = FIRST + per * a
                    st = np.int64(bt[slots[a], jn])
                    if st != 0:
                        seen += 1
                    x[at] = stretch[sm_p[a, st] >> 4]
                    x[at + 1] = 0
                    if per == 3:            # format 10: the same again where the history is deterministic
                        x[at + 2] = x[at] if st != 0 and (n0[st] == 0 or n1[st] == 0) else 0
                    rb = runs[a, 2]
                    if rb >= 0 and ((rb + 256) >> (8 - d)) == node:
                        e = stretch[run_p[a, min(runs[a, 3], RUNS - 1)] >> 4]
                        x[at + 1] = e if ((rb >> (7 - d)) & 1) == 1 else -e
                ms = 0
                x[MATCH] = 0
                predicted = expect >= 0 and ((expect + 256) >> (8 - d)) == node
                if predicted:
                    e = stretch[match_p[ml] >> 10]
                    x[MATCH] = e if ((expect >> (7 - d)) & 1) == 1 else -e
                    ms = 1 if ml < 16 else (2 if ml < 32 else 3)
                confidence = min(7, abs(xn) >> 8)
                sel[0] = (confidence * 4 + ms) * 8 + d
                if S.models >= 3:           # format 7: by the nesting and the markup state instead
                    sel[1] = node * 8 + min(depth, 3) * 2 + (1 if markup[lane, 0] != 0 else 0)
                else:
                    sel[1] = node * 4 + a1
                sel[2] = c1 * 8 + d
                sel[3] = (min(seen, 15) * 4 + ms) * 8 + d
                sel[4] = confidence * 8 + d
                if alone5:                  # format 9 without the network (its confidence is always 0 there):
                    sel[0] = c2 * 8 + d     # by c2, and the last mixer's by the match state and how many contexts
                    sel[4] = ms * 8 + d + (32 if 2 * seen >= nu else 0)          # have seen the node
                pm = mixer2.predict(mx, squash)
                cx2 = APM_C1 + c1 * 256 + node
                cx3 = APM_C2 + ((a2c * 256 + node * 0x9E37) & hmask)
                p1, i1 = apm_p(apm, node, pm, stretch)
                p2, i2_ = apm_p(apm, cx2, pm, stretch)
                p3, i3 = apm_p(apm, cx3, pm, stretch)
                if S.models >= 4:           # format 8: and by the match's length and predicted bit, and node
                    cx4 = match_rows + ((1 + ml * 2 + ((expect >> (7 - d)) & 1)) if predicted else 0) * 256 + node
                    p4, i4 = apm_p(apm, cx4, pm, stretch)
                    p = min(4095, max(1, (pm + p1 + 2 * p2 + 2 * p3 + 2 * p4 + 4) >> 3))
                else:
                    p = min(4095, max(1, (2 * pm + p1 + 2 * p2 + 3 * p3 + 4) >> 3))
                # code the bit
                if encode:
                    y = (byte >> (7 - d)) & 1
                    coder.encode(cd, p, y)
                else:
                    y = coder.decode(cd, p)
                spent += bits[p if y == 1 else 4096 - p]
                # learn
                mixer2.update(mx, y)
                apm_learn(apm, node, i1, y)
                apm_learn(apm, cx2, i2_, y)
                apm_learn(apm, cx3, i3, y)
                if S.models >= 4:
                    apm_learn(apm, cx4, i4, y)
                if has_net or alone5:
                    apm_learn(apm, anc, ia, y)
                for a in range(nu):
                    st = np.int64(bt[slots[a], jn])
                    history.learn(maps, a, st, y)
                    bt[slots[a], jn] = np.uint8(nxt[st, y])
                    rb = runs[a, 2]
                    if rb >= 0 and ((rb + 256) >> (8 - d)) == node:
                        r = min(runs[a, 3], RUNS - 1)
                        right = 1 if ((rb >> (7 - d)) & 1) == y else 0
                        run_p[a, r] += (((right << 16) - run_p[a, r]) * 3) >> 7
                if predicted:
                    right = 1 if ((expect >> (7 - d)) & 1) == y else 0
                    match_p[ml] += (((right << 22) - match_p[ml]) * 3) >> 6
                node = 2 * node + y
            byte = node - 256
            if not encode:
                grid[lane, t] = byte
            cost[lane * m + t + 1] = spent
            # --- what the byte teaches the lane's contexts ----------------------------------------------
            for a in range(nu):
                buckets.run_learn(bk, runs[a, 0], runs[a, 1], byte)
            if is_letter(byte):
                words[lane, 0] = mix2(w0, byte + 32 if 65 <= byte <= 90 else byte)
            elif w0 != 0:
                if follows:                             # w0, complete, followed w1 and w2 w1
                    follow[w1 & 0xFFFF] = w0
                    follow[65536 + (mix2(w2, w1) & 0xFFFF)] = w0
                words[lane, 2], words[lane, 1], words[lane, 0] = w1, w0, 0
            if S.models >= 4:
                token_learn(words, lane, byte)
            if byte == 10:
                lines[lane, 1], lines[lane, 0] = lines[lane, 0], t + 1
            if S.models >= 3:
                nest_learn(nest, markup, lane, byte, t - lines[lane, 0])
            record_learn(seen_at, record, lane, byte, t)
            ind[65536 + c1] = ((ind[65536 + c1] << 8) | byte) & 0xFFFF
            ind[i2] = ((ind[i2] << 8) | byte) & 0xFFFF
            if S.models >= 5:
                ind3[j3] = ((ind3[j3] << 8) | byte) & 0xFFFF
            if match_len[lane] > 0:                     # a miss keeps the match's alignment (as LZMA's repeated
                match_ptr[lane] += 1                    # distance does) unless it misses often
                if expect == byte:
                    match_len[lane] += 1
                    match_miss[lane] = (match_miss[lane] << 1) & 255
                else:
                    match_miss[lane] = ((match_miss[lane] << 1) | 1) & 255
                    match_len[lane] = 0 if popcount8(match_miss[lane]) > MAX_MISSES else 1
            if t + 1 >= MIN_MATCH:
                hm = 0
                for j in range(MIN_MATCH):
                    hm = ((hm * 0x2F0B5) ^ np.int64(grid[lane, t - j])) & 0xFFFFFFFFF
                hm = (hm ^ (hm >> 17)) & mmask
                if match_len[lane] == 0:
                    cand = match_table[hm] - 1
                    if cand >= 0:
                        match_ptr[lane] = cand
                        match_len[lane] = 1
                        match_miss[lane] = 0
                match_table[hm] = lane * m + t + 1 + 1
    return t1
