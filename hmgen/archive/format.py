"""`.hmz` archives: per block, the smallest of the model's range code, raw LZMA2, or the bytes stored.

Format, version 9 (all integers little-endian; every record carries a CRC32 of its own header fields):

  header   magic b"\\x89HMZ" | version u8 = 9 | scheme u8 (hmgen.archive.engine.scheme.SCHEME) | name length u8 |
           model name (UTF-8) | sha256 of the model's float weights (32 bytes) | CRC32 of the preceding header bytes u32
  block    b"B" | method u8 | transform u8 | coded length n u32 (1..BLOCK) | lane length m u32 | payload bytes u32 |
           CRC32 of the block's input u32 | CRC32 of the payload u32 | CRC32 of these header fields u32 | payload
  flush    b"F" | payload bytes u32 | CRC32 of the payload u32 | CRC32 of these header fields u32 | payload
  end      b"E" | total input length u64 | blocks u32 | CRC32 of the whole input u32 | CRC32 of these u32

An archive is one or more such members back to back (`cat a.hmz b.hmz`, or `compress -c a b`): it decodes
to the concatenation of the members' inputs, as gzip, xz and zstd do.

Input is read in blocks of at most BLOCK bytes (bounded memory, stdin streams). A block is first transformed
(`transform`, hmgen.archive.methods: CRLF line ends to LF, only where exactly invertible), giving the n coded
bytes, then stored by `method`:
  0 stored   payload = the n bytes
  1 LZMA     payload = raw LZMA2 at preset 9e (xz's own coder without its container)
  5 LZMA-x86 payload = raw x86 BCJ + LZMA2 at preset 9e (`xz --x86`), tried on blocks that look like machine code
  2 network  payload = u32 words of one range-coder stream driven by the integer model alone (as in version 1)
  3 mixed-bytes  the same, the model's next-byte distribution mixed with what is learned from the block so far
             (hmgen.archive.adaptive), as 256-entry frequency tables (version 2; still decoded, no longer written)
  4 mixed    the same models and mixer, each byte coded as its 8 bits (high bit first; bit d of every running lane,
             then bit d + 1), each bit's probability refined by two adaptive probability maps (version 3)
  6 LZMA-stream      payload = what one raw LZMA2 stream at preset 9e, running across the member's LZMA-stream
  7 LZMA-x86-stream  blocks (7: behind the x86 filter), gave out while it read this block (version 4); a flush
             record ends the stream (its payload: the rest), before the next block of another method and before
             the end record. A block's bytes may come out only with a later payload of its stream: the decoder
             holds them until the block is complete, then checks its CRC32.
  8 mixed-2  payload = the bytes of one binary arithmetic code (hmgen.archive.adaptive.coder) of every bit, the
             network mixed with the stronger models of the block of hmgen.archive.adaptive.predictor2 (bit
             histories in hashed contexts, word and column contexts, two mixer layers, an APM chain); the lanes
             code their t-th bytes one after another, each bit learned from before the next (version 5)
  9 cm       the same without the network (one lane: m = n), for blocks that are not text (version 5)
 10 cm-primed  method 9 whose models first learn, without coding them, the coded bytes (after the transform
             methods.forward gives) of the member's last block before it that is not primed, its *primer*: the
             lane is the primer's bytes, then the block's, so its contexts and match model reach into the primer.
             The encoder cuts a large block read into a short head (coded without the network: quick to decode)
             and a few pieces that follow it (segments): every piece is primed by the head, so a cut forgets less
             of what one block would have learned, and the pieces decode side by side once the head is decoded
             (version 6)
 11 mixed-3, 12 cm-3, 13 cm-3-primed  methods 8, 9 and 10 with the file models of version 7 (predictor2 with
             models=3: contexts for code and markup (brackets, indentation, tags) and longer ones, mixer weight sets
             chosen by them, a slower mixer rate); 8-10 are still decoded (version 7)
 14 mixed-4, 15 cm-4, 16 cm-4-primed  the same with format 8's (models=4: contexts of the token being read — an
             identifier, a number — with the byte before it, with the line's first token, with the indent and with
             the innermost bracket; a fourth APM, by the match's length and predicted bit). The encoder writes 14-16,
             and 11-13 for prose, where format 8's additions gain nothing and cost time (version 8)
 17 cm-5, 18 cm-5-primed  methods 15 and 16 with format 9's file models for data (predictor2 with models=5: the
             match's predicted byte and length as a context, the bytes that last followed the last one to three
             bytes as a context, mixer weight sets chosen by c2 and by the match state, an order-2 direct input;
             contexts chosen for data); 19 cm-5-text, 20 cm-5-text-primed  the same with contexts chosen for text
             (models=6). The encoder writes 17-20 where it wrote 12, 13, 15 and 16 (19 and 20 for text); the
             network's methods stay 11 (prose) and 14 (version 9)
 21 cm-6, 22 cm-6-primed  methods 17 and 18 with format 10's wide models for data (predictor2 with
             models=7: the same contexts, a third mixer input per context where its bit history is
             deterministic). The encoder writes 21 and 22 where it wrote 17 and 18; text keeps 11, 14, 19 and 20
             (version 10)
 23 mixed-5, 24 cm-7, 25 cm-7-primed, 26 cm-7-text, 27 cm-7-text-primed  methods 14, 21, 22, 19 and 20 with
             format 11's models (predictor2 with models=10, 9 and 8: two contexts join them, the classes of the
             last six bytes and of the last six runs of one class). The encoder writes 23-27 where it wrote 14 and
             19-22; prose keeps 11 (version 11)
 28 mixed-6, 29 cm-8-text, 30 cm-8-text-primed  methods 23, 26 and 27 with format 12's models (predictor2 with
             models=12 and 11: wide, a third mixer input per context as format 10 gave data; alone two contexts
             join them, the word being read with the word that last followed the one before, or the two before).
             The encoder writes 28-30 where it wrote 23, 26 and 27; prose keeps 11, data 24 and 25 (version 12)
The encoder writes whichever is smallest, so no block costs more than LZMA2 or than storing it: any input's
archive stays within a constant (~105 bytes) plus 27 bytes per 64 MiB block of `xz -9e`'s size for inputs up to
64 MiB (one block: its LZMA2 is xz's stream without the container). A block of at least ESTIMATE_FROM bytes is
first judged (entropy; text goes to the model; else the model's code against LZMA2's on SAMPLE bytes): one it cannot win
skips the model and goes into the member's LZMA stream, so a large binary or incompressible input costs about
xz's time, and its LZMA2, one stream like xz's, reaches across block boundaries, so the bound holds at any size.
Version 2 wrote blocks of 16 MiB; versions 2 and 3 restarted LZMA2 in every block.

Methods 2-4 cut the n bytes into L = ceil(n / m) contiguous lanes of m bytes (the last may be shorter),
coded in parallel as one batch: at step t the coder receives the t-th byte of every lane still running, in
lane order, each lane having started from the model's initial state as if it followed a newline. Every lane
of a block shares one range coder stream. The decoder replays the same steps, so it reproduces the encoder's
frequencies exactly (hmgen.archive.engine), and checks the block's CRC32 before writing any of it.

Version 8 (still decoded): as version 9 without methods 17-20.
Version 7 (still decoded): as version 8 without methods 14-16.
Version 6 (still decoded): as version 7 without methods 11-13.
Version 5 (still decoded): as version 6 without method 10 (a large block read was cut into independent pieces).
Version 4 (still decoded): as version 5 without methods 8 and 9 (text went to method 4).
Version 3 (still decoded): as version 4 without methods 6 and 7 and the flush record.
Version 2 (still decoded): as version 3 without methods 4 and 5.
Version 1 (still decoded): the same header with version 1, blocks b"B" | n u32 | m u32 | words u32 | CRC32 of
the input u32 | CRC32 of the payload u32 | CRC32 of these u32 | words x u32 (method 2, no transform).
"""
from __future__ import annotations

import contextlib
import lzma
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Protocol

import constriction
import numpy as np

from hmgen.archive import methods
from hmgen.archive.adaptive import coder, predictor2
from hmgen.archive.adaptive.predictor import Predictor
from hmgen.archive.engine.scheme import SCHEME
from hmgen.errors import HmgenError


class Engine(Protocol):
    """The integer model: hmgen.archive.engine.cpu_engine.IntegerLM (CPU, compiled, no torch) or
    hmgen.archive.engine.torch_engine.QuantLM (torch, any device). Both compute exactly the same integers, so either
    decodes what the other coded."""
    hash: bytes                                                  # sha256 of the float weights

    def initial_state(self, lanes: int): ...

    def next_frequencies(self, symbols: np.ndarray, state) -> tuple[np.ndarray, object]: ...


MAGIC = b"\x89HMZ"
VERSION = 12
BLOCK = 64 << 20          # input bytes per block: xz -9e's dictionary size, so a block's LZMA2 reaches as far back as
                          # xz's does (smaller blocks cost ratio on large binaries: benchmarks/RESULTS.md)
MAX_LANES = 4096
MIN_LANE = 2048           # default: lanes of at least this many bytes (fewer, longer lanes code better)...
SMALL_LANE = 256          # ...down to this for small blocks, cut into up to SMALL_LANES lanes: steps, not bytes,
SMALL_LANES = 16          # cost time, and the adaptive models share what every lane has learned
DEFAULT_LANES = 256       # default upper bound on lanes (more lanes: larger batches, faster)
START = 10                # every lane starts as if after a newline
(STORED, LZMA, NETWORK, MIXED_BYTES, MIXED, LZMA_X86, LZMA_STREAM, LZMA_X86_STREAM, MIXED2, CM, CM_PRIMED,
 MIXED3, CM3, CM3_PRIMED, MIXED4, CM4, CM4_PRIMED, CM5, CM5_PRIMED, CM5_TEXT, CM5_TEXT_PRIMED,
 CM6, CM6_PRIMED, MIXED5, CM7, CM7_PRIMED, CM7_TEXT, CM7_TEXT_PRIMED, MIXED6, CM8_TEXT, CM8_TEXT_PRIMED) = range(31)
METHOD_NAMES = ("stored", "lzma", "network", "mixed-bytes", "mixed", "lzma-x86", "lzma-stream", "lzma-x86-stream",
                "mixed-2", "cm", "cm-primed", "mixed-3", "cm-3", "cm-3-primed", "mixed-4", "cm-4", "cm-4-primed",
                "cm-5", "cm-5-primed", "cm-5-text", "cm-5-text-primed", "cm-6", "cm-6-primed", "mixed-5", "cm-7",
                "cm-7-primed", "cm-7-text", "cm-7-text-primed", "mixed-6", "cm-8-text", "cm-8-text-primed")
CODED = (NETWORK, MIXED_BYTES, MIXED, MIXED2, MIXED3, MIXED4, MIXED5, MIXED6)   # the methods that run the model
ALONE = (CM, CM_PRIMED, CM3, CM3_PRIMED, CM4, CM4_PRIMED,          # ... the file's models alone, one lane (m = n)
         CM5, CM5_PRIMED, CM5_TEXT, CM5_TEXT_PRIMED, CM6, CM6_PRIMED, CM7, CM7_PRIMED, CM7_TEXT, CM7_TEXT_PRIMED,
         CM8_TEXT, CM8_TEXT_PRIMED)
LANED = CODED + ALONE                                              # ... that cut their block into lanes (m > 0)
PRIMED = (CM_PRIMED, CM3_PRIMED, CM4_PRIMED, CM5_PRIMED, CM5_TEXT_PRIMED,     # ... whose models first learn
          CM6_PRIMED, CM7_PRIMED, CM7_TEXT_PRIMED, CM8_TEXT_PRIMED)        # the member's head
MODELS = {MIXED2: 2, CM: 2, CM_PRIMED: 2, MIXED3: 3, CM3: 3, CM3_PRIMED: 3, MIXED4: 4, CM4: 4, CM4_PRIMED: 4,
          CM5: 5, CM5_PRIMED: 5, CM5_TEXT: 6, CM5_TEXT_PRIMED: 6,
          CM6: 7, CM6_PRIMED: 7, MIXED5: 10, CM7: 9, CM7_PRIMED: 9, CM7_TEXT: 8, CM7_TEXT_PRIMED: 8,
          MIXED6: 12, CM8_TEXT: 11, CM8_TEXT_PRIMED: 11}
                                                   # ... the file's models each codes with (predictor2's `models`)
WORDS = (NETWORK, MIXED_BYTES, MIXED)           # ... whose payload is u32 words (constriction's)
STREAMED = (LZMA_STREAM, LZMA_X86_STREAM)  # the methods whose payloads continue one LZMA2 stream
SEGMENT = 1 << 20          # what the model codes is cut when it holds two of these: into a head and pieces that
SEGMENT_SPAN = 16 << 20    # follow it, one piece per this many bytes (at least two)
SEGMENTS = 4               # and at most this many (the level's): coded side by side. The file's models learn from
HEAD_SHARE = 16            # all of their block, so each cut costs size (benchmarks/RESULTS.md, "compress at scale"):
HEAD_MAX = 1 << 20         # a few long pieces, each primed by the head (1/HEAD_SHARE of the input, at most HEAD_MAX)
WINDOW = 256 << 20         # decoding on several threads: at most this many bytes of blocks decoded ahead
AHEAD = 4                  # ... and at most this many blocks per thread
ESTIMATE_FROM = 512 << 10  # blocks from this size are first judged on a sample: can the model win?
SAMPLE = 128 << 10         # ... of this many bytes: the model's code against LZMA2's
MIN_ENTROPY_CHECK = 16 << 10   # from this size a block whose bytes look random (order-0 entropy above
RANDOM_BITS = 7.9              # RANDOM_BITS per byte) skips the model: compressed or random data
BLOCK_HEAD = struct.Struct("<BBIIIIII")    # method, transform, n, m, payload bytes, data crc, payload crc, header crc
BLOCK_HEAD_V1 = struct.Struct("<IIIIII")   # n, m, words, data crc, payload crc, header crc
END_HEAD = struct.Struct("<QIII")          # total, blocks, data crc, header crc
FLUSH_HEAD = struct.Struct("<III")         # payload bytes, payload crc, header crc
FAMILY = constriction.stream.model.Categorical(perfect=False)   # explicit: constriction 0.5 still defaults to its
                                                                # slow perfect=True, and coder and decoder must agree


class FormatError(HmgenError):
    """Not an archive, a damaged one, or one made with another model: reported as one line."""


@dataclass
class Stats:
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    blocks: int = 0
    lanes: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    model: str = ""


def lanes_for(n: int, max_lanes: int, min_lane: int | None = None) -> int:
    """Lane length m for a block of n bytes: lanes of at least min_lane bytes, at most max_lanes of them."""
    if min_lane is None:
        min_lane = min(MIN_LANE, max(SMALL_LANE, n // SMALL_LANES))
    lanes = max(1, min(max_lanes, n // min_lane))
    return -(-n // lanes)


def header_bytes(name: str, weights_hash: bytes) -> bytes:
    raw = name.encode()
    if len(raw) > 255:
        raise FormatError(f"model name too long for the archive header ({len(raw)} bytes)")
    head = MAGIC + bytes([VERSION, SCHEME, len(raw)]) + raw + weights_hash
    return head + struct.pack("<I", zlib.crc32(head))


def code_block(q: Engine, m: int, n: int, encode: bool, data: bytes | None = None,
               words: np.ndarray | None = None, progress: Callable[[int], None] | None = None, method: int = MIXED):
    """Encode `data` (n bytes, lanes of m) into uint32 words, or decode n bytes from `words`, by `method`:
    2 (the network alone), 3 (mixed, byte tables) or 4 (mixed, bit by bit)."""
    grid = np.zeros((-(-n // m), m), dtype=np.uint8)             # (lanes, m): lane k is input[k*m:(k+1)*m]
    if encode:
        grid.reshape(-1)[:n] = np.frombuffer(data, dtype=np.uint8)
        return encode_lanes(steps(q, grid, n, method, progress), grid, method)
    decode_lanes(steps(q, grid, n, method, progress), grid, method, words)
    return grid.reshape(-1)[:n].tobytes()


def encode_lanes(steps, grid: np.ndarray, method: int) -> np.ndarray:
    """Range-code each step's bytes grid[:k, t] with the predictor's probabilities -> uint32 words."""
    coder = constriction.stream.queue.RangeEncoder()
    for t, k, model in steps:
        if method == MIXED:                                      # 8 binary decisions per byte, high bit first
            bits = (grid[:k, t][None, :] >> np.arange(7, -1, -1)[:, None]) & 1      # (8, k), bit-major
            coder.encode(bits.reshape(-1).astype(np.int32), FAMILY, binary(model.predict_bits(grid, t, k).reshape(-1)))
        else:
            coder.encode(grid[:k, t].astype(np.int32), FAMILY, model.predict_bytes(grid, t, k))
    return coder.get_compressed()


def decode_lanes(steps, grid: np.ndarray, method: int, words: np.ndarray) -> None:
    """Decode each step's bytes into grid[:k, t], bit by bit (method 4: each bit's node needs the bits above)."""
    coder = constriction.stream.queue.RangeDecoder(words)
    for t, k, model in steps:
        if method == MIXED:
            nodes = np.ones(k, dtype=np.int64)
            for d in range(8):
                nodes = 2 * nodes + coder.decode(FAMILY, binary(model.predict_bit(grid, t, k, d, nodes)))
            grid[:k, t] = nodes - 256
        else:
            grid[:k, t] = coder.decode(FAMILY, model.predict_bytes(grid, t, k))


def steps(q: Engine, grid: np.ndarray, n: int, method: int, progress: Callable[[int], None] | None):
    """The steps of a block's lanes, shared by the encoder and the decoder: at step t the network's frequencies
    from the bytes of step t-1 (START at t = 0) go to the predictor, which yields (t, k lanes running, predictor);
    once the caller has coded grid[:k, t], the predictor learns from those bytes. So both sides see the same
    probabilities."""
    lanes, m = grid.shape
    last = n - (lanes - 1) * m                                   # length of the last lane
    model = NetworkAlone() if method == NETWORK else Predictor(n, lanes, bitwise=method == MIXED)
    state = q.initial_state(lanes)
    prev = np.full(lanes, START, dtype=np.int64)
    done = 0
    for t in range(m):
        freq, state = q.next_frequencies(prev, state)
        k = lanes if t < last else lanes - 1                     # lanes still running at step t
        model.begin(freq[:k], grid, t)                           # exact integers, float64 by format
        yield t, k, model
        model.update(grid, t, k)
        prev = grid[:, t].astype(np.int64)
        done += k
        if progress is not None and (t % 16 == 15 or t == m - 1):
            progress(done)
            done = 0


class Busy:
    """How many of `threads` threads are coding a block just now. A method-8 block's network splits its lanes over
    the others (lanes_on), so the core that finishes its blocks first helps the last one instead of idling, and no
    core gets two threads' work while every thread has a block of its own."""

    def __init__(self, threads: int):
        self.threads, self.count, self.lock = threads, 0, threading.Lock()

    def idle(self) -> int:
        return max(0, self.threads - self.count)

    def running(self, fn: Callable) -> Callable:
        """fn, counted as a block being coded while it runs."""
        def counted(*args):
            with self.lock:
                self.count += 1
            try:
                return fn(*args)
            finally:
                with self.lock:
                    self.count -= 1
        return counted


@contextlib.contextmanager
def lanes_on(q: Engine | None, threads: int, busy: Busy | None = None):
    """`q` with its lanes computed on `threads` threads (the CPU engine; the same frequencies), or `q` itself.
    With `busy`, on this thread and the idle ones only, decided again at every step."""
    from hmgen.archive.engine.cpu_engine import IntegerLM, LanesOnThreads
    if threads <= 1 or not isinstance(q, IntegerLM):
        yield q
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads - 1) as pool:
        yield LanesOnThreads(q, pool, threads if busy is None else lambda: 1 + busy.idle())


def code_cm(q: Engine | None, m: int, n: int, encode: bool, data: bytes | None = None, payload: bytes | None = None,
            progress: Callable[[int], None] | None = None, network: bool = True,
            give_up: Callable[[int, int], bool] | None = None, primer: bytes = b"", models: int = 4,
            ahead: bool = False, costs: list | None = None):
    """Method 14 (network True: lanes of m) or 15 (no network; one lane, m = n; 16 with a primer), or with models=3
    methods 11, 12 and 13 (format 7's file models, predictor2), with models=2 8, 9 and 10 (format 5 and 6's): encode `data`
    (n bytes) into the payload's bytes, or decode n bytes from `payload`. At step t the network's frequencies from
    the bytes of step t-1 (START at t = 0) go to the compiled coder, which codes the t-th byte of every lane.
    `give_up(steps done, payload bytes so far)`, asked every CHECK_EVERY steps while method 8 encodes, may stop
    it: None is returned. `ahead` (encoding): the network runs one step ahead on a thread of its own, since the
    encoder knows every byte: step t+1's frequencies are computed while step t's bytes are coded (the same
    frequencies, in the same order; for a block with a core to spare). `costs` (encoding): as code_alone's."""
    if not network:
        return code_alone(n, encode, data, payload, progress, primer, models, costs)
    grid = np.zeros((-(-n // m), m), dtype=np.uint8)             # (lanes, m): lane k is input[k*m:(k+1)*m]
    lanes = grid.shape[0]
    last = n - (lanes - 1) * m                                   # length of the last lane
    model = predictor2.new(n, lanes, predictor2.ACTIVE[models, True], models)
    if encode:
        grid.reshape(-1)[:n] = np.frombuffer(data, dtype=np.uint8)
        cd = coder.encoder(n)
    else:
        cd = coder.decoder(payload)
    state = q.initial_state(lanes)
    prev = np.full(lanes, START, dtype=np.int64)
    done = reported = 0
    with contextlib.ExitStack() as stack:
        pool = None
        if ahead and encode:
            from concurrent.futures import ThreadPoolExecutor
            pool = stack.enter_context(ThreadPoolExecutor(1))   # waits for a step computed ahead on any exit
        coming = None                                            # step t's frequencies, computed ahead
        for t in range(m):
            freq, state = coming.result() if coming is not None else q.next_frequencies(prev, state)
            if pool is not None and t + 1 < m:
                coming = pool.submit(q.next_frequencies, grid[:, t].astype(np.int64), state)
            while predictor2.code(model, freq, True, grid, t, t + 1, last, encode, cd) == t:
                cd = coder.grown(cd)                             # (encoding) the payload outgrew its buffer
            prev = grid[:, t].astype(np.int64)
            if give_up is not None and t % CHECK_EVERY == CHECK_EVERY - 1 and give_up(t + 1, int(cd.regs[2])):
                if progress is not None:
                    progress(n - reported)                       # the rest of the block is method 12's
                return None
            done += lanes if t < last else lanes - 1
            if progress is not None and (t % 16 == 15 or t == m - 1):
                progress(done)
                reported += done
                done = 0
    if encode:
        if costs is not None:
            costs.append(bits_before(model.cost))
        return cd.buf[:coder.finish(cd)].tobytes()
    return grid.reshape(-1)[:n].tobytes()


def code_alone(n: int, encode: bool, data: bytes | None, payload: bytes | None,
               progress: Callable[[int], None] | None, primer: bytes = b"", models: int = 4,
               costs: list | None = None, give_up: Callable[[int, np.ndarray], bool] | None = None) -> bytes | None:
    """Method 15, or 16 with a primer (models=3: 12 and 13; models=2: 9 and 10): one lane, the primer's p bytes then
    the block's n. The
    primer's steps are coded into a scratch coder that is thrown away (the models learn them as they would learn
    coded bytes; encoder and decoder alike), then the block's steps into the payload, or out of it. `costs` (when
    encoding) gets the bits spent before each of the block's bytes, (n + 1,) in 1/1024 bit (for the give-up rules).
    `give_up(bytes coded, cost)` (encoding; cost: the predictor's, each of the block's bytes' bits at [i + 1]),
    asked every 1/ALONE_CHECKS of the block, may stop it: None is returned."""
    p = len(primer)
    grid = np.zeros((1, p + n), dtype=np.uint8)                   # (1 lane, primer + block)
    grid[0, :p] = np.frombuffer(primer, dtype=np.uint8)
    model = predictor2.new(p + n, 1, predictor2.ACTIVE[models, False], models)
    if p:
        cm_steps(model, grid, 0, p, True, coder.encoder(p), None)
    if encode:
        grid[0, p:] = np.frombuffer(data, dtype=np.uint8)
        cd = coder.encoder(n)
        if give_up is None:
            cd = cm_steps(model, grid, p, p + n, True, cd, progress)
        else:
            every = max(1, -(-n // ALONE_CHECKS))
            for t in range(0, n, every):
                cd = cm_steps(model, grid, p + t, p + min(n, t + every), True, cd, progress)
                if t + every < n and give_up(t + every, model.cost[p:]):
                    return None
        if costs is not None:
            costs.append(bits_before(model.cost[p:]))
        return cd.buf[:coder.finish(cd)].tobytes()
    cm_steps(model, grid, p, p + n, False, coder.decoder(payload), progress)
    return grid[0, p:].tobytes()


def bits_before(cost: np.ndarray) -> np.ndarray:
    """A predictor's cost from a byte on (each byte's bits at [i + 1]) -> the bits spent before each of the bytes
    after it, (len(cost),) in 1/1024 bit."""
    out = np.cumsum(cost)
    return out - out[0]


def cm_steps(model: predictor2.State, grid: np.ndarray, t: int, end: int, encode: bool, cd: coder.Coder,
             progress: Callable[[int], None] | None) -> coder.Coder:
    """Steps t .. end - 1 of a one-lane grid through the compiled coder, CM_PIECE at a time -> the coder (an
    encoder's may have grown)."""
    while t < end:
        reached = predictor2.code(model, NO_NETWORK, False, grid, t, min(end, t + CM_PIECE), grid.shape[1], encode, cd)
        if reached < min(end, t + CM_PIECE):
            cd = coder.grown(cd)
        if progress is not None:
            progress(reached - t)
        t = reached
    return cd


NO_NETWORK = np.zeros((1, 256), dtype=np.float64)
CHECK_EVERY = 64                   # method 8's encoder asks give_up after every this many steps
ALONE_CHECKS = 64                  # method 12's, this many times in a block (when method 11 went first)
CM_PIECE = 1 << 16                 # method 9 codes this many bytes per compiled call (a progress bar moves)


class NetworkAlone:
    """Method 2's predictor: the network's frequencies as they are, nothing learned from the block."""

    def begin(self, net: np.ndarray, grid: np.ndarray, t: int) -> None:
        self.net = net

    def predict_bytes(self, grid: np.ndarray, t: int, k: int) -> np.ndarray:
        return self.net

    def update(self, grid: np.ndarray, t: int, k: int) -> None:
        pass


def binary(p1: np.ndarray) -> np.ndarray:
    """(n,) P(1) in 12 bits -> (n, 2) float64 integer frequencies [P(0), P(1)] for the range coder."""
    return np.stack([4096 - p1, p1], axis=1).astype(np.float64)


def block_record(method: int, transform: int, n: int, m: int, data: bytes, payload: bytes) -> bytes:
    fields = (method, transform, n, m, len(payload), zlib.crc32(data), zlib.crc32(payload))
    return b"B" + BLOCK_HEAD.pack(*fields, zlib.crc32(b"B" + BLOCK_HEAD.pack(*fields, 0)[:-4])) + payload


def encode_block(q: Engine, data: bytes, max_lanes: int, min_lane: int | None,
                 progress: Callable[[int], None] | None, model: bool = True,
                 preset: int = methods.BEST, threads: int = 1, busy: Busy | None = None,
                 primer: bytes = b"", network: bool = True) -> tuple[bytes, str, int]:
    """One block -> (its record, method name, lanes): the smallest of stored, LZMA2 (behind the x86 filter too, for
    machine code) and, unless `model` is False, the model's code (method 9's primed by `primer`'s coded bytes when
    given: method 10; without `network`, method 9 or 10 alone). With threads > 1, LZMA2 and the
    model's code without the network run on a second thread beside the network's (the same record: a block alone
    in its input, e.g. a file under 2 MiB, gets two cores too); with `busy` (one of several blocks coded side by
    side) they run in turn, and the network takes the threads no other block is using."""
    transform, coded = methods.forward(data)
    n = len(coded)

    def lzma_codes() -> list:
        return [(LZMA, transform, 0, methods.lzma_compress(coded, preset=preset)),
                *([(LZMA_X86, transform, 0, methods.lzma_compress(coded, x86=True, preset=preset))]
                  if methods.looks_like_x86(coded) else [])]

    stored = (STORED, methods.NONE, 0, data)               # ties go to the simpler method
    if not model:
        candidates = [stored, *lzma_codes()]
    elif threads > 1 and busy is None and network:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as side:
            lzma_done = side.submit(lzma_codes)
            coded_by_model = model_candidate(q, coded, transform, max_lanes, min_lane, progress, side, threads,
                                             primer=primer)
            candidates = [stored, *lzma_done.result(), coded_by_model]
    else:
        candidates = [stored, *lzma_codes(), model_candidate(q, coded, transform, max_lanes, min_lane, progress,
                                                             threads=threads, busy=busy, primer=primer,
                                                             network=network)]
    method, transform, m, payload = min(candidates, key=lambda c: len(c[3]))
    if progress is not None and not model:
        progress(n)
    n = len(data) if method == STORED else n
    return block_record(method, transform, n, m, data, payload), METHOD_NAMES[method], -(-n // m) if m else 0


def model_candidate(q: Engine, coded: bytes, transform: int, max_lanes: int, min_lane: int | None,
                    progress: Callable[[int], None] | None, side=None, threads: int = 1,
                    busy: Busy | None = None, primer: bytes = b"",
                    network: bool = True) -> tuple[int, int, int, bytes]:
    """The model's code of a block: for text the smaller of the network's method in lanes and the file's own models
    in one lane (they see all of the block's context, and win on markup and code the network knows less well), for
    anything else the latter; with the network prose keeps format 7's models (method 11: format 8's and 11's
    additions do not improve it, on large prose blocks format 8's cost 0.2 %), other text takes format 12's (28);
    the models alone are format 12's for text (29/30) and format 11's for anything else (24/25). Below,
    "method 11" and "method 12" name the two roles. `side`: an executor that codes method 12 while this thread
    codes method 11, whose network then runs one step ahead on the other `threads` - 1 threads (code_cm's
    `ahead`). Method 12 is ~4x faster, so it is coded first (or is done first beside method 11), and method 11 stops
    once it cannot win (gives_up); on one thread, a block of prose under NETWORK_FIRST_MAX, which method 11 wins, is
    coded by method 11 first and method 12 stops once it cannot win (yields_to). With a primer, the one-lane
    models first learn it (methods 25, 30); method 11's start cold, as its lanes do."""
    n = len(coded)
    prose, text = looks_like_prose(coded), looks_like_text(coded)
    mixed_method = MIXED3 if prose else MIXED6         # format 8's token contexts, match APM, format 11's shapes and
                                                       # 12's width pay off with the network in code, markup and
    alone_method = ((CM8_TEXT_PRIMED if primer else CM8_TEXT) if text     # tables, not in prose (RESULTS.md, "format
                    else (CM7_PRIMED if primer else CM7))                 # 8", "format 11"); format 12's file models
                                                                          # for text, or format 11's for data
    if not network or not text:
        return alone_method, transform, n, code_alone(n, True, coded, None, progress, primer, MODELS[alone_method])
    m = lanes_for(n, max_lanes, min_lane)
    models = MODELS[mixed_method]
    if side is None and n < NETWORK_FIRST_MAX and prose:
        spent: list = []                               # method 11's bits before each byte, for yields_to
        with lanes_on(q, threads, busy) as lanes:
            mixed = mixed_method, transform, m, code_cm(lanes, m, n, True, data=coded, progress=progress,
                                                        costs=spent, models=models)
        payload = code_alone(n, True, coded, None, None, primer, MODELS[alone_method], give_up=yields_to(n, spent[0]))
        return mixed if payload is None else min(mixed, (alone_method, transform, n, payload), key=lambda c: len(c[3]))
    spent = []                                         # method 12's bits before each byte, for gives_up
    one_lane = lambda: (alone_method, transform, n, code_alone(n, True, coded, None, None, primer,
                                                               MODELS[alone_method], costs=spent))
    if side is not None:
        alone = side.submit(one_lane)
    else:
        from concurrent.futures import Future
        alone = Future()
        alone.set_result(one_lane())
    nine = lambda: (len(alone.result()[3]), spent[0]) if alone.done() else None
    spare = threads > 1 and busy is None        # a block alone: its network runs a step ahead of the file's models,
    with lanes_on(q, threads - 1 if spare else threads, busy) as lanes:      # on the threads they leave (x1.13)
        payload = code_cm(lanes, m, n, True, data=coded, progress=progress, give_up=gives_up(m, n, nine), ahead=spare,
                          models=models)
    if payload is None:
        return alone.result()
    return min((mixed_method, transform, m, payload), alone.result(), key=lambda c: len(c[3]))


NETWORK_FIRST_MAX = 1 << 19   # prose blocks under this size go to method 11 first: it won every one measured (by 3-35 %;
                              # 8 % on a 420 kB one), method 12 the ones of 1 MiB and more (benchmarks/RESULTS.md)
GIVE_UP_MIN = 1 << 18    # method 8 may stop by its forecast in blocks of at least this many bytes,
GIVE_UP_FROM = 0.5       # once this share of its steps is coded,
GIVE_UP_MARGIN = 1.02    # if the forecast exceeds method 9's size by this factor;
PACE_FROM = 0.375        # in a block of any size, once this share is coded, when even its pace against method 9's on
PACE_GAIN = 0.8          # the same bytes, bettered by this factor for the bytes to come, cannot reach method 9's size
YIELD_FROM = 0.25        # method 12's rule (yields_to) from this share of the block on


def gives_up(m: int, n: int, nine: Callable[[], tuple[int, np.ndarray] | None]) -> Callable[[int, int], bool]:
    """Method 8's stopping rule, given `nine()`: method 9's size and its bits before each byte ((n + 1,), 1/1024 bit;
    None while not known). Every step codes one byte of each lane, a sample spread over the whole block, so its
    payload grows nearly linearly in the steps:
    - forecast: the rate of the last half of the steps coded (the lanes' costly first bytes left out), carried to
      the end; stop when that exceeds method 9's size by GIVE_UP_MARGIN. In blocks of 256 KiB and more it came out
      1-6 % high at half-way; in smaller ones up to 17 % high (benchmarks/RESULTS.md, "method 8 gives up"), so there
      only the second rule applies:
    - pace: method 8's bytes over the last half of its steps against method 9's bits on the same bytes; method 8's
      pace keeps improving through a block (its models learn from every lane), by up to ~20 % over the rest of 23
      text blocks of 4-200 kB measured, so stop only when even that gain (PACE_GAIN) on the bytes still to come
      leaves it above method 9 (benchmarks/RESULTS.md, "format 7": no wrong stop on those blocks)."""
    sizes = {0: 0}                                                   # steps coded -> payload bytes then
    starts = np.arange(0, n, m)                                      # (lanes,) where each lane starts

    def give_up(t: int, size: int) -> bool:
        sizes[t] = size
        known = nine() if t >= PACE_FROM * m else None
        if known is None:
            return False
        final9, cost9 = known
        if n >= GIVE_UP_MIN and t >= GIVE_UP_FROM * m and forecast(sizes, t, m) > GIVE_UP_MARGIN * final9:
            return True
        return paced(sizes, t, m, n, starts, cost9) > final9
    return give_up


def forecast(sizes: dict[int, int], t: int, m: int) -> float:
    """Method 8's final payload, forecast after t of m steps from `sizes` (steps coded -> payload bytes, noted
    every CHECK_EVERY steps and at 0): the growth over the last half of the steps, carried to the end."""
    half = t // 2 // CHECK_EVERY * CHECK_EVERY                       # a step near t/2 where the size was noted
    return sizes[t] + (sizes[t] - sizes[half]) * (m - t) / max(t - half, 1)


def paced(sizes: dict[int, int], t: int, m: int, n: int, starts: np.ndarray, cost9: np.ndarray) -> float:
    """The least method 8's payload may still reach after t of m steps: its bytes per method-9 byte over the last half
    of its steps (the same bytes of every lane), bettered by PACE_GAIN, times method 9's bytes of the steps to come."""
    half = t // 2 // CHECK_EVERY * CHECK_EVERY
    at = lambda step: cost9[np.minimum(starts + step, n)]            # (lanes,) method 9's bits before each lane's step
    recent, rest = (at(t) - at(half)).sum() / 8192, (at(m) - at(t)).sum() / 8192
    return least(sizes[t], sizes[t] - sizes[half], recent, rest)


def least(so_far: float, mine: float, theirs: float, rest: float) -> float:
    """The least a method's code may still reach: `so_far`, plus the other method's cost of the bytes to come
    (`rest`) times this method's pace against it on the bytes coded lately (`mine` / `theirs`), bettered by
    PACE_GAIN."""
    return so_far + PACE_GAIN * mine / max(theirs, 1.0) * rest


def yields_to(n: int, eleven: np.ndarray) -> Callable[[int, np.ndarray], bool]:
    """Method 12's stopping rule after method 11 coded the block, given its bits before each byte `eleven` ((n + 1,),
    1/1024 bit): method 12 codes the bytes in order, so from YIELD_FROM of them, stop once its pace against method
    11's over the last half of the bytes coded, bettered by PACE_GAIN, cannot reach method 11's size (`least`).
    Asked as the encoder asks it on 32 text blocks of 4-471 kB (benchmarks/give_up_pace.py), it stops on every
    prose block at 0.25-0.83 of it, never wrongly; it would stop wrongly on two non-prose blocks that method 12 wins
    by 1.5-2 % (benchmarks/RESULTS.md, "format 8"), which is why only prose goes first to method 11."""
    def give_up(t: int, cost: np.ndarray) -> bool:
        if t < YIELD_FROM * n:
            return False
        mine, half = bits_before(cost[:t + 1]), t // 2
        return least(mine[t], mine[t] - mine[half], eleven[t] - eleven[half], eleven[n] - eleven[t]) > eleven[n]
    return give_up


def looks_like_prose(data: bytes) -> bool:
    """Letters and spaces at least PROSE_LETTERS of the bytes, and the symbols of code and markup fewer than
    PROSE_SYMBOLS: running text in a Latin script (prose 0.90-0.96 / 0.00-0.03; code, markup, logs, tables and other
    scripts 0.23-0.87, or ≥ 0.03 of symbols, on the benchmark's files)."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    letters = counts[65:91].sum() + counts[97:123].sum() + counts[32]
    symbols = counts[np.frombuffer(b"<>{}[]()=/_\\|#$%*&@~^`+", dtype=np.uint8)].sum()
    return letters >= PROSE_LETTERS * len(data) and symbols < PROSE_SYMBOLS * len(data)


PROSE_LETTERS, PROSE_SYMBOLS = 0.88, 0.03


def segments(data: bytes, count: int = SEGMENTS) -> list[bytes]:
    """The model's blocks of what was read, decided by the data and the level alone, never by the thread count:
    all of it while it holds less than two SEGMENTs (or the level says one); else a head of 1/HEAD_SHARE of it
    (at most HEAD_MAX), then the rest in equal pieces, one per SEGMENT_SPAN bytes but at least two and at most
    `count`, which the threads code side by side, each primed by the head (method 10). A CR LF pair is never cut."""
    if count <= 1 or len(data) < 2 * SEGMENT:
        return [data]
    head = min(HEAD_MAX, len(data) // HEAD_SHARE)
    k = min(count, max(2, -(-len(data) // SEGMENT_SPAN)))
    size = -(-(len(data) - head) // k)
    ends = [head] + [head + size * i for i in range(1, k)] + [len(data)]
    pieces, start = [], 0
    for end in ends:
        if end < len(data) and data[end - 1:end] == b"\r":
            end += 1
        if end > start:
            pieces.append(data[start:end])
            start = end
    return pieces


def ordered_map(fn: Callable, items: list, threads: int):
    """fn over items on up to `threads` threads, results in order (the coder's loops run in numba code that
    releases the GIL, and LZMA2 does too). One thread, or one item: no pool."""
    if threads <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()


def entropy_bits(data: bytes) -> float:
    """Order-0 entropy in bits per byte."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum())


def looks_like_text(data: bytes) -> bool:
    """Almost every byte printable, a tab or a line end, or part of a multi-byte UTF-8 character, and next to no
    NUL (UTF-16 and binary formats have many): text in any script, source code, markup, logs (what the network
    is for)."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    texty = counts[9] + counts[10] + counts[13] + counts[32:127].sum() + counts[128:].sum()
    return counts[0] <= len(data) // 1000 and texty >= 0.97 * len(data)


def model_may_win(q: Engine, coded: bytes, max_lanes: int, min_lane: int | None) -> bool:
    """The cheap estimate made before the model runs on a block: bytes that look random (compressed, encrypted)
    never; text always; from ESTIMATE_FROM bytes of anything else, only if the model's code of the first SAMPLE
    bytes is smaller than LZMA2's (the sample runs on one thread: text, the common case, skips it)."""
    if len(coded) >= MIN_ENTROPY_CHECK and entropy_bits(coded[:SAMPLE]) > RANDOM_BITS:
        return False
    if len(coded) < ESTIMATE_FROM or looks_like_text(coded[:SAMPLE]):
        return True
    sample = coded[:SAMPLE]
    return len(code_cm(None, len(sample), len(sample), True, data=sample, network=False, models=MODELS[CM7])) < len(
        methods.lzma_compress(sample))


class LzmaStream:
    """The member's one LZMA2 stream (methods 6, 7): fed block after block, in pieces, so a progress bar moves."""

    PIECE = 1 << 20

    def __init__(self, x86: bool, preset: int = methods.BEST):
        self.x86 = x86
        self.coder = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=methods.filters(x86, preset))

    def feed(self, coded: bytes, progress: Callable[[int], None] | None) -> bytes:
        out = []
        for i in range(0, len(coded), self.PIECE):
            out.append(self.coder.compress(coded[i:i + self.PIECE]))
            if progress is not None:
                progress(min(self.PIECE, len(coded) - i))
        return b"".join(out)

    def flush_record(self) -> bytes:
        payload = self.coder.flush()
        fields = (len(payload), zlib.crc32(payload))
        return b"F" + FLUSH_HEAD.pack(*fields, zlib.crc32(b"F" + FLUSH_HEAD.pack(*fields, 0)[:-4])) + payload


@dataclass(frozen=True)
class Level:
    """A compression level: a choice of the encoder only (any archive decodes without knowing it)."""
    model: bool = True                  # run the model (else LZMA2 and stored only)
    max_lanes: int = DEFAULT_LANES      # lanes coded side by side at most...
    min_lane: int | None = None         # ...each at least this long (None: lanes_for's default)
    preset: int = methods.BEST          # LZMA2's preset
    segments: int = SEGMENTS            # pieces per block read after its head, at most (1: no cut, no head)


# -1 .. -9 (--fast = 1, --best = 9). Measured points of the speed/size curve: README "Levels",
# benchmarks/levels.py. Fewer, longer lanes start cold less often (smaller archives) but give the threads
# fewer lanes to share out per step; level 9 also keeps each block read whole (one thread per 64 MiB).
LEVELS = {1: Level(model=False, preset=6), 2: Level(model=False),
          3: Level(max_lanes=4096, min_lane=256), 4: Level(max_lanes=1024, min_lane=512),
          5: Level(max_lanes=512, min_lane=1024), 6: Level(), 7: Level(max_lanes=128, min_lane=4096),
          8: Level(max_lanes=64, min_lane=8192), 9: Level(max_lanes=16, min_lane=16384, segments=1)}
DEFAULT_LEVEL = 6


class MemberWriter:
    """One archive member written block by block: the header, each block (the smallest of its methods, or into
    the member's LZMA stream when the estimate says the model cannot win), the stream's flush, the end record.
    `compress` drives it from a file; hmgen.archive.api from writes of any size."""

    def __init__(self, dst: BinaryIO, q: Engine, name: str, max_lanes: int = DEFAULT_LANES,
                 min_lane: int | None = None, progress: Callable[[int], None] | None = None,
                 level: Level | None = None, threads: int = 1):
        if not 1 <= max_lanes <= MAX_LANES:
            raise ValueError(f"lanes must be between 1 and {MAX_LANES}")
        self.level = level or Level(max_lanes=max_lanes, min_lane=min_lane)
        self.dst, self.q, self.progress, self.threads = dst, q, progress, threads
        self.max_lanes, self.min_lane = self.level.max_lanes, self.level.min_lane
        self.st = Stats(model=name)
        self.start = time.perf_counter()
        self.crc = 0
        self.stream: LzmaStream | None = None
        self.put(header_bytes(name, q.hash))

    def put(self, record: bytes) -> None:
        self.dst.write(record)
        self.st.bytes_out += len(record)

    def end_stream(self) -> None:
        if self.stream is not None:
            self.put(self.stream.flush_record())
            self.stream = None

    def write_block(self, data: bytes) -> None:
        """1..BLOCK bytes read: one block into the LZMA stream, or up to the level's `segments` blocks of their own,
        coded side by side on `threads` threads (each its own predictor and range coder: the same archive for any
        thread count, unless a give-up rule stops the method that would have won; none did on the blocks measured,
        model_candidate)."""
        transform, coded = methods.forward(data)
        may_win = self.level.model and model_may_win(self.q, coded, self.max_lanes, self.min_lane)
        if may_win or len(coded) < ESTIMATE_FROM:          # small blocks: every method tried, as in version 3
            self.end_stream()
            pieces = segments(data, self.level.segments) if may_win else [data]
            busy = Busy(self.threads) if len(pieces) > 1 else None   # one block: its codes side by side instead
            primer = methods.forward(pieces[0])[1] if len(pieces) > 1 else b""     # the head primes the others
            # The head goes without the network (method 9, ~5x quicker to decode than method 8): the other pieces
            # wait for its bytes before they can start decoding.
            code = lambda i: (pieces[i], *encode_block(self.q, pieces[i], self.max_lanes, self.min_lane, self.progress,
                                                       model=may_win, preset=self.level.preset, threads=self.threads,
                                                       busy=busy, primer=primer if i else b"",
                                                       network=not (i == 0 and len(pieces) > 1)))
            for piece, record, method, lanes in ordered_map(busy.running(code) if busy else code,
                                                            list(range(len(pieces))), self.threads):
                self.add(piece, record, method, lanes)
            return
        x86 = methods.looks_like_x86(coded)
        if self.stream is not None and self.stream.x86 != x86:
            self.end_stream()
        self.stream = self.stream or LzmaStream(x86, self.level.preset)
        method = LZMA_X86_STREAM if x86 else LZMA_STREAM
        record = block_record(method, transform, len(coded), 0, data, self.stream.feed(coded, self.progress))
        self.add(data, record, METHOD_NAMES[method], 0)

    def add(self, data: bytes, record: bytes, method: str, lanes: int) -> None:
        self.put(record)
        self.st.bytes_in += len(data)
        self.st.blocks += 1
        self.st.lanes.append(lanes)
        self.st.methods.append(method)
        self.crc = zlib.crc32(data, self.crc)

    def close(self) -> Stats:
        self.end_stream()
        fields = (self.st.bytes_in, self.st.blocks, self.crc)
        self.put(b"E" + END_HEAD.pack(*fields, zlib.crc32(b"E" + struct.pack("<QII", *fields))))
        self.st.seconds = time.perf_counter() - self.start
        return self.st


def compress(src: BinaryIO, dst: BinaryIO, q: Engine, name: str, max_lanes: int = DEFAULT_LANES,
             progress: Callable[[int], None] | None = None, min_lane: int | None = None, block: int = BLOCK,
             level: Level | None = None, threads: int = 1) -> Stats:
    """Read src to its end, write one archive member to dst. The lane layout is stored, so the decoder needs
    none of these settings (`level`, when given, replaces max_lanes and min_lane; `threads` changes the speed,
    never the archive)."""
    writer = MemberWriter(dst, q, name, max_lanes, min_lane, progress, level, threads)
    while data := read_full(src, block):
        writer.write_block(data)
    return writer.close()


def read_full(f: BinaryIO, n: int) -> bytes:
    """Up to n bytes; fewer only at the end of the stream (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    b = read_full(f, n)
    if len(b) != n:
        raise FormatError(f"truncated archive (ends inside the {what})")
    return b


@dataclass
class Header:
    name: str
    weights_hash: bytes
    size: int
    version: int = VERSION


def read_header(src: BinaryIO, magic: bytes | None = None) -> Header:
    """A member's header (its magic number already read when given)."""
    magic = read_full(src, 4) if magic is None else magic
    if magic != MAGIC:
        raise FormatError("not an hmgen archive (bad magic number)")
    fixed = read_exact(src, 3, "header")
    version, scheme, length = fixed
    if not 1 <= version <= VERSION:
        raise FormatError(f"archive format version {version}; this hmgen reads versions 1 to {VERSION}")
    raw = read_exact(src, length + 32, "header")
    (crc,) = struct.unpack("<I", read_exact(src, 4, "header"))
    if zlib.crc32(magic + fixed + raw) != crc:
        raise FormatError("damaged archive header (CRC mismatch)")
    if scheme != SCHEME:
        raise FormatError(f"archive uses integer scheme {scheme}; this hmgen computes scheme {SCHEME}")
    try:
        name = raw[:length].decode()
    except UnicodeDecodeError:
        raise FormatError("damaged archive header (model name)") from None
    return Header(name, raw[length:], 4 + 3 + length + 32 + 4, version)


def next_header(src: BinaryIO) -> Header | None:
    """The header of the next concatenated member, or None at the end of the input."""
    magic = read_full(src, 4)
    if not magic:
        return None
    if magic != MAGIC:
        raise FormatError("trailing garbage after the end of the archive")
    return read_header(src, magic)


@dataclass
class Block:
    method: int
    transform: int
    n: int               # coded bytes (after the transform)
    m: int               # lane length (methods 2-3)
    data_crc: int        # of the block's input
    payload: bytes | None
    size: int            # bytes of the record in the archive
    payload_crc: int


def read_records(src: BinaryIO, version: int, skip_payload: bool = False):
    """Yield a Block for each block (payload None when skipped), ("F", payload, record bytes) for each flush of an
    LZMA stream (version 4), then ("E", total, blocks, crc)."""
    blocks = 0
    while True:
        kind = read_exact(src, 1, "block list")
        if kind == b"F" and version >= 4:
            raw = read_exact(src, FLUSH_HEAD.size, "flush record")
            size, payload_crc, crc = FLUSH_HEAD.unpack(raw)
            if zlib.crc32(b"F" + raw[:-4]) != crc or size > BLOCK:
                raise FormatError(f"damaged archive (flush record after block {blocks})")
            if skip_payload and src.seekable():
                src.seek(size, 1)
                payload = None
            else:
                payload = read_exact(src, size, "flush record")
                if zlib.crc32(payload) != payload_crc:
                    raise FormatError(f"damaged archive (flush record after block {blocks}: CRC mismatch)")
            yield ("F", payload, 1 + FLUSH_HEAD.size + size)
            continue
        if kind == b"B":
            blk = read_block_v1(src, blocks) if version == 1 else read_block(src, blocks, version)
            size = blk.size - 1 - (BLOCK_HEAD_V1.size if version == 1 else BLOCK_HEAD.size)
            if skip_payload and src.seekable():
                src.seek(size, 1)
            else:
                blk.payload = read_exact(src, size, "block data")
                if zlib.crc32(blk.payload) != blk.payload_crc:
                    raise FormatError(f"damaged archive (block {blocks + 1} data CRC mismatch)")
                if skip_payload:
                    blk.payload = None
            blocks += 1
            yield blk
        elif kind == b"E":
            raw = read_exact(src, END_HEAD.size, "end record")
            total, count, data_crc, crc = END_HEAD.unpack(raw)
            if zlib.crc32(b"E" + raw[:-4]) != crc:
                raise FormatError("damaged archive (end record CRC mismatch)")
            if count != blocks:
                raise FormatError(f"damaged archive ({blocks} blocks, end record says {count})")
            yield ("E", total, count, data_crc)
            return
        else:
            raise FormatError(f"damaged archive (unknown record after block {blocks})")


LAST_METHOD = {2: MIXED, 3: LZMA_X86, 4: LZMA_X86_STREAM, 5: CM, 6: CM_PRIMED,    # the methods each version may
               7: CM3_PRIMED, 8: CM4_PRIMED, 9: CM5_TEXT_PRIMED, 10: CM6_PRIMED, 11: CM7_TEXT_PRIMED,
               12: CM8_TEXT_PRIMED}                  # hold


def read_block(src: BinaryIO, index: int, version: int = VERSION) -> Block:
    raw = read_exact(src, BLOCK_HEAD.size, "block header")
    method, transform, n, m, size, data_crc, payload_crc, crc = BLOCK_HEAD.unpack(raw)
    if zlib.crc32(b"B" + raw[:-4]) != crc:
        raise FormatError(f"damaged archive (block {index + 1} header CRC mismatch)")
    lanes_ok = ((1 <= m <= n and -(-n // m) <= MAX_LANES and (method not in ALONE or m == n)) if method in LANED
                else m == 0)
    most = n + n // 64 + (1 << 20) if method in STREAMED else n      # a stream may give out earlier blocks' bytes
    if not (method <= LAST_METHOD[version] and transform <= methods.LAST and 1 <= n <= BLOCK and lanes_ok
            and size <= most and (method != STORED or (size == n and transform == methods.NONE))
            and (method not in WORDS or size % 4 == 0)):
        raise FormatError(f"damaged archive (block {index + 1} header out of range)")
    return Block(method, transform, n, m, data_crc, None, 1 + BLOCK_HEAD.size + size, payload_crc)


def read_block_v1(src: BinaryIO, index: int) -> Block:
    raw = read_exact(src, BLOCK_HEAD_V1.size, "block header")
    n, m, words, data_crc, payload_crc, crc = BLOCK_HEAD_V1.unpack(raw)
    if zlib.crc32(b"B" + raw[:-4]) != crc:
        raise FormatError(f"damaged archive (block {index + 1} header CRC mismatch)")
    if not (1 <= n <= BLOCK and 1 <= m <= n and -(-n // m) <= MAX_LANES and words <= n + 2 * MAX_LANES):
        raise FormatError(f"damaged archive (block {index + 1} header out of range)")
    return Block(NETWORK, methods.NONE, n, m, data_crc, None, 1 + BLOCK_HEAD_V1.size + 4 * words, payload_crc)


def check_model(head: Header, q: Engine, name: str) -> None:
    if head.weights_hash == q.hash:
        return
    made = f"archive was made with model {head.name!r} (weights sha256 {head.weights_hash.hex()[:16]}…)"
    if name == head.name:       # another model of the same name (a user's run named like a bundled model)
        raise FormatError(f"{made}; the {name!r} found here has other weights ({q.hash.hex()[:16]}…): pass "
                          f"--model PATH to the model file it was made with")
    raise FormatError(f"{made}; {name!r} has {q.hash.hex()[:16]}… — decompress with --model {head.name}")


def decode_block(blk: Block, model: Callable[[], tuple[Engine, str]], index: int,
                 progress: Callable[[int], None] | None, threads: int = 1, busy: Busy | None = None,
                 primer: Callable[[], bytes] | None = None) -> bytes:
    """A block's input, checked against its CRC32 (a block of its own: not of an LZMA stream); a method-8 block's
    network on `threads` threads (with `busy`: on those no other block is using); a method-10 block's primer
    (its data, decoded) from `primer()`, which may wait for another thread to decode it."""
    try:
        if blk.method == STORED:
            coded = blk.payload
        elif blk.method in (LZMA, LZMA_X86):
            coded = methods.lzma_decompress(blk.payload, blk.n, x86=blk.method == LZMA_X86)
        elif blk.method in ALONE:
            primed = methods.forward(primer())[1] if blk.method in PRIMED else b""
            coded = code_alone(blk.n, False, None, blk.payload, progress, primed, MODELS[blk.method])
        elif blk.method in MODELS:
            with lanes_on(model()[0], threads, busy) as q:
                coded = code_cm(q, blk.m, blk.n, False, payload=blk.payload, progress=progress,
                                models=MODELS[blk.method])
        else:
            q, _ = model()
            words = np.frombuffer(blk.payload, dtype="<u4").astype(np.uint32)
            coded = code_block(q, blk.m, blk.n, False, words=words, progress=progress, method=blk.method)
    except (AssertionError, ValueError, KeyError, RuntimeError, methods.LZMAError) as e:  # constriction, lzma
        raise FormatError(f"damaged archive (block {index} does not decode: {type(e).__name__})") from None
    if progress is not None and blk.method not in LANED:
        progress(blk.n)
    return checked(blk, coded, index)


def decode_cost(blk: Block) -> float:
    """Roughly how long a block takes to decode, in method-9 bytes: method 8 runs the file's models too, and its
    network costs ~4 times them (benchmarks/RESULTS.md, "compress at scale")."""
    return blk.n * (0.0 if blk.method in (STORED, LZMA, LZMA_X86) else 1.0 if blk.method in ALONE else 5.0)


def checked(blk: Block, coded: bytes, index: int) -> bytes:
    data = methods.inverse(blk.transform, coded)
    if zlib.crc32(data) != blk.data_crc:
        raise FormatError(f"damaged archive (block {index} decodes to data with the wrong CRC32)")
    return data


class StreamDecoder:
    """One LZMA stream of a member (methods 6, 7): payloads in, each block's bytes out once all of them came,
    checked against its CRC32."""

    def __init__(self, x86: bool):
        self.x86 = x86
        self.coder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                                           filters=methods.X86_FILTERS if x86 else methods.FILTERS)
        self.out = bytearray()
        self.waiting: list[tuple[Block, int]] = []           # blocks not complete yet, with their index

    def feed(self, payload: bytes, what: str) -> None:
        try:
            if self.coder.eof:
                raise methods.LZMAError("data after the end of the stream")
            self.out += self.coder.decompress(payload)
        except methods.LZMAError:
            raise FormatError(f"damaged archive ({what} does not decode)") from None

    def block(self, blk: Block, index: int) -> list[tuple[Block, bytes]]:
        self.feed(blk.payload, f"block {index}")
        self.waiting.append((blk, index))
        return self.ready()

    def ready(self) -> list[tuple[Block, bytes]]:
        done = []
        while self.waiting and len(self.out) >= self.waiting[0][0].n:
            blk, index = self.waiting.pop(0)
            coded = bytes(self.out[:blk.n])
            del self.out[:blk.n]
            done.append((blk, checked(blk, coded, index)))
        return done

    def flush(self, payload: bytes) -> list[tuple[Block, bytes]]:
        self.feed(payload, "the LZMA stream's flush record")
        done = self.ready()
        if not self.coder.eof or self.waiting or self.out or self.coder.unused_data:
            raise FormatError("damaged archive (an LZMA stream does not hold its blocks)")
        return done


def decoded_blocks(src: BinaryIO, resolve: Callable[[Header], tuple[Engine, str]], head: Header, st: Stats,
                   progress: Callable[[int], None] | None = None, threads: int = 1):
    """Every member's blocks from src, in order, each as its verified bytes (the first header already read);
    `st` counts them. `resolve` gives (model, name) for a member's header, asked only when a block needs it.
    With threads > 1, blocks of their own are decoded side by side: up to AHEAD x `threads` of them, and WINDOW
    bytes, ahead of the one yielded (more than `threads`, so that a thread done with a quick block takes the next
    instead of waiting for a slow one ahead of it: method-9 blocks decode several times faster than method-8 ones,
    benchmarks/RESULTS.md "compress at scale"). The first window is read whole and started costliest first, so
    that a method-8 block does not start last and run alone at the end; a method-10 block's primer starts before it
    (it waits for the primer's bytes on its thread: never for a block not yet started)."""
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    busy = Busy(threads)
    window: list = []                                    # [n, future] of blocks read, decoding, not yet yielded
    pending: list = []                                   # (block, index, slot, primer's slot) read, not yet started
    try:
        st.model = st.model or head.name
        while head is not None:
            engine: list = []

            def model(head=head):
                if not engine:
                    q, name = resolve(head)
                    check_model(head, q, name)
                    engine.append((q, name))
                return engine[0]

            st.bytes_in += head.size
            total_crc, total, stream = 0, 0, None
            primer_slot: list | None = None              # [a function giving its data] of the block that primes

            def ahead(keep: int):
                """Decoded blocks off the front of the window until `keep` (and WINDOW bytes) remain."""
                nonlocal total_crc, total
                while len(window) > keep or (window and sum(n for n, _ in window) > WINDOW):
                    data = window.pop(0)[1].result()
                    total_crc, total = zlib.crc32(data, total_crc), total + len(data)
                    st.bytes_out += len(data)
                    yield data

            def start() -> None:
                """The blocks read and not yet started, costliest first (primed ones after every other); the window
                keeps their order."""
                futures = {}
                for rec, index, slot, primer in sorted(pending, key=lambda p: (p[0].method in PRIMED,
                                                                               -decode_cost(p[0]))):
                    futures[index] = pool.submit(busy.running(decode_block), rec, model, index, progress, threads,
                                                 busy, None if primer is None else (lambda s=primer: s[0]()))
                    if slot is not None:
                        slot.append(futures[index].result)
                window.extend([rec.n, futures[index]] for rec, index, _, _ in pending)
                pending.clear()

            def now(ready: list[bytes]):
                nonlocal total_crc, total
                for data in ready:
                    total_crc, total = zlib.crc32(data, total_crc), total + len(data)
                    st.bytes_out += len(data)
                    yield data

            for rec in read_records(src, head.version):
                if isinstance(rec, tuple) and rec[0] == "F":
                    if stream is None:
                        raise FormatError("damaged archive (a flush record without an LZMA stream)")
                    yield from now([data for _, data in stream.flush(rec[1])])
                    stream = None
                    st.bytes_in += rec[2]
                    continue
                if isinstance(rec, tuple):
                    start()
                    yield from ahead(0)
                    _, length, _, data_crc = rec
                    if stream is not None or total != length or data_crc != total_crc:
                        raise FormatError("damaged archive (length or CRC of the whole input does not match)")
                    st.bytes_in += 1 + END_HEAD.size
                    break
                index = st.blocks + 1
                st.blocks += 1
                st.bytes_in += rec.size
                st.lanes.append(-(-rec.n // rec.m) if rec.m else 0)
                st.methods.append(METHOD_NAMES[rec.method])
                if rec.method in STREAMED:                   # in order, after every block before it
                    primer_slot = None
                    start()
                    yield from ahead(0)
                    if stream is not None and stream.x86 != (rec.method == LZMA_X86_STREAM):
                        raise FormatError(f"damaged archive (block {index} changes an open LZMA stream's filter)")
                    stream = stream or StreamDecoder(rec.method == LZMA_X86_STREAM)
                    ready = [data for _, data in stream.block(rec, index)]
                    if progress is not None:
                        progress(sum(map(len, ready)))
                    yield from now(ready)
                    continue
                if stream is not None:
                    raise FormatError(f"damaged archive (block {index} inside an LZMA stream)")
                slot, primer = None, None
                if rec.method in PRIMED:
                    if primer_slot is None:
                        raise FormatError(f"damaged archive (block {index} is primed by no block before it)")
                    primer = primer_slot
                else:
                    slot = primer_slot = []
                if pool is None:
                    data = decode_block(rec, model, index, progress,
                                        primer=None if primer is None else (lambda: primer[0]()))
                    if slot is not None:
                        slot.append(lambda data=data: data)
                    yield from now([data])
                    continue
                if rec.method in CODED:
                    model()                                  # loaded here, once, before a thread needs it
                pending.append((rec, index, slot, primer))
                if not window and len(pending) < AHEAD * threads and sum(p[0].n for p in pending) < WINDOW:
                    continue                                 # still reading the first window
                start()
                yield from ahead(AHEAD * threads)
            head = next_header(src)
    finally:
        if pool is not None:
            for _, f in window:
                f.cancel()
            pool.shutdown(wait=True)


def decompress(src: BinaryIO, dst: BinaryIO | None, q: Engine | Callable[[Header], tuple[Engine, str]],
               name: str = "", head: Header | None = None, progress: Callable[[int], None] | None = None,
               threads: int = 1) -> Stats:
    """Decode every member from src (the first header already read if `head` is given); dst None = test only.
    `q` is the integer model, or a function giving (model, name) for a member's header, called only when a
    block needs the model. Each block is verified against its CRC32 before it is written."""
    start = time.perf_counter()
    head = head or read_header(src)
    st = Stats()
    for data in decoded_blocks(src, q if callable(q) else (lambda h: (q, name)), head, st, progress, threads):
        if dst is not None:
            dst.write(data)
    st.seconds = time.perf_counter() - start
    return st


@dataclass
class Listing:
    name: str                     # the model's name; for members made with several models, "a+b"
    weights_hash: str             # the first member's
    compressed: int
    original: int
    blocks: int
    lanes: list[int]
    methods: list[str] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)   # each model of the members once: name, weights sha256
    members: int = 0


def list_archive(src: BinaryIO) -> Listing:
    """Sizes and layout from the headers alone (payloads are skipped, not decoded); members summed."""
    head = read_header(src)
    out = Listing(head.name, head.weights_hash.hex(), 0, 0, 0, [])
    while head is not None:
        model = {"name": head.name, "weights_sha256": head.weights_hash.hex()}
        if model not in out.models:
            out.models.append(model)
        out.members += 1
        out.compressed += head.size
        for rec in read_records(src, head.version, skip_payload=True):
            if isinstance(rec, tuple) and rec[0] == "F":
                out.compressed += rec[2]
                continue
            if isinstance(rec, tuple):
                out.compressed += 1 + END_HEAD.size
                out.original += rec[1]
                out.blocks += rec[2]
                break
            out.compressed += rec.size
            out.lanes.append(-(-rec.n // rec.m) if rec.m else 0)
            out.methods.append(METHOD_NAMES[rec.method])
        head = next_header(src)
    out.name = "+".join(dict.fromkeys(m["name"] for m in out.models))
    return out
