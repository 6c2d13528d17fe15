"""`.hmz` archives: the integer model's next-byte frequencies drive a range coder (constriction).

Format, version 1 (all integers little-endian; every record carries a CRC32 of its own header fields):

  header   magic b"\\x89HMZ" | version u8 = 1 | scheme u8 (hmgen.cell.integer.SCHEME) | name length u8 | model name
           (UTF-8) | sha256 of the model's float weights (32 bytes) | CRC32 of the preceding header bytes u32
  block    b"B" | n u32 (bytes of input, 1..BLOCK) | lane length m u32 | words u32 | CRC32 of the block's
           input u32 | CRC32 of the payload u32 | CRC32 of these header fields u32 | payload: words x u32
  end      b"E" | total input length u64 | blocks u32 | CRC32 of the whole input u32 | CRC32 of these u32

Input is read in blocks of at most BLOCK bytes (bounded memory, stdin streams). A block of n bytes is cut
into L = ceil(n / m) contiguous lanes of m bytes (the last may be shorter), coded in parallel as one batch:
at step t the coder receives the t-th byte of every lane still running, in lane order, each lane having
started from the model's initial state as if it followed a newline. Every lane of a block shares one
range coder stream. The decoder replays the same steps, so it reproduces the encoder's frequencies
exactly (hmgen.cell.integer), and checks the block's CRC32 before writing any of it.
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import constriction
import numpy as np
import torch

from hmgen.cell.integer import SCHEME, QuantLM
from hmgen.errors import HmgenError

MAGIC = b"\x89HMZ"
VERSION = 1
BLOCK = 16 << 20          # input bytes per block
MAX_LANES = 4096
MIN_LANE = 2048           # default: lanes of at least this many bytes (fewer, longer lanes code better)
DEFAULT_LANES = 256       # default upper bound on lanes (more lanes: larger batches, faster)
START = 10                # every lane starts as if after a newline
BLOCK_HEAD = struct.Struct("<IIIIII")      # n, m, words, data crc, payload crc, header crc
END_HEAD = struct.Struct("<QIII")          # total, blocks, data crc, header crc
FAMILY = constriction.stream.model.Categorical(perfect=False)   # always perfect=False; see compression.md


class FormatError(HmgenError):
    """Not an archive, a damaged one, or one made with another model: reported as one line."""


@dataclass
class Stats:
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    blocks: int = 0
    lanes: list[int] = field(default_factory=list)
    model: str = ""


def lanes_for(n: int, max_lanes: int, min_lane: int = MIN_LANE) -> int:
    """Lane length m for a block of n bytes: lanes of at least min_lane bytes, at most max_lanes of them."""
    lanes = max(1, min(max_lanes, n // min_lane))
    return -(-n // lanes)


def header_bytes(name: str, weights_hash: bytes) -> bytes:
    raw = name.encode()
    if len(raw) > 255:
        raise FormatError(f"model name too long for the archive header ({len(raw)} bytes)")
    head = MAGIC + bytes([VERSION, SCHEME, len(raw)]) + raw + weights_hash
    return head + struct.pack("<I", zlib.crc32(head))


def code_block(q: QuantLM, m: int, n: int, encode: bool, data: bytes | None = None,
               words: np.ndarray | None = None, progress: Callable[[int], None] | None = None):
    """Encode `data` (n bytes, lanes of m) into uint32 words, or decode n bytes from `words`."""
    lanes = -(-n // m)
    last = n - (lanes - 1) * m                                   # length of the last lane
    grid = np.zeros((lanes, m), dtype=np.uint8)                  # (lanes, m): lane k is input[k*m:(k+1)*m]
    if encode:
        grid.reshape(-1)[:n] = np.frombuffer(data, dtype=np.uint8)
        coder = constriction.stream.queue.RangeEncoder()
    else:
        coder = constriction.stream.queue.RangeDecoder(words)
    state = q.initial_state(lanes)
    prev = torch.full((lanes,), START, dtype=torch.long, device=q.device)
    done = 0
    for t in range(m):
        freq, state = q.step(prev, state)
        k = lanes if t < last else lanes - 1                     # lanes still running at step t
        probs = freq[:k].cpu().numpy().astype(np.float64)        # exact integers, float64 by format
        if encode:
            coder.encode(grid[:k, t].astype(np.int32), FAMILY, probs)
        else:
            grid[:k, t] = coder.decode(FAMILY, probs)
        prev = torch.from_numpy(grid[:, t].astype(np.int64)).to(q.device)
        done += k
        if progress is not None and (t % 16 == 15 or t == m - 1):
            progress(done)
            done = 0
    if encode:
        return coder.get_compressed()
    return grid.reshape(-1)[:n].tobytes()


def compress(src: BinaryIO, dst: BinaryIO, q: QuantLM, name: str, max_lanes: int = DEFAULT_LANES,
             progress: Callable[[int], None] | None = None, min_lane: int = MIN_LANE, block: int = BLOCK) -> Stats:
    """Read src to its end, write one archive to dst. The lane layout is stored, so the decoder needs
    none of these settings."""
    if not 1 <= max_lanes <= MAX_LANES:
        raise ValueError(f"lanes must be between 1 and {MAX_LANES}")
    st = Stats(model=name)
    start = time.perf_counter()
    head = header_bytes(name, q.hash)
    dst.write(head)
    st.bytes_out += len(head)
    crc = 0
    while True:
        data = read_full(src, block)
        if not data:
            break
        n = len(data)
        m = lanes_for(n, max_lanes, min_lane)
        words = code_block(q, m, n, True, data=data, progress=progress)
        payload = words.astype("<u4").tobytes()
        fields = (n, m, len(words), zlib.crc32(data), zlib.crc32(payload))
        rec = b"B" + BLOCK_HEAD.pack(*fields, zlib.crc32(b"B" + struct.pack("<IIIII", *fields)))
        dst.write(rec + payload)
        st.bytes_in += n
        st.bytes_out += len(rec) + len(payload)
        st.blocks += 1
        st.lanes.append(-(-n // m))
        crc = zlib.crc32(data, crc)
    fields = (st.bytes_in, st.blocks, crc)
    end = b"E" + END_HEAD.pack(*fields, zlib.crc32(b"E" + struct.pack("<QII", *fields)))
    dst.write(end)
    st.bytes_out += len(end)
    st.seconds = time.perf_counter() - start
    return st


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


def read_header(src: BinaryIO) -> Header:
    magic = read_full(src, 4)
    if magic != MAGIC:
        raise FormatError("not an hmgen archive (bad magic number)")
    fixed = read_exact(src, 3, "header")
    version, scheme, length = fixed
    if version != VERSION:
        raise FormatError(f"archive format version {version}; this hmgen reads version {VERSION}")
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
    return Header(name, raw[length:], 4 + 3 + length + 32 + 4)


def read_records(src: BinaryIO, skip_payload: bool = False):
    """Yield ("B", n, m, data_crc, payload) for each block (payload None when skipped), then ("E", total, blocks, crc)."""
    blocks = 0
    while True:
        kind = read_exact(src, 1, "block list")
        if kind == b"B":
            raw = read_exact(src, BLOCK_HEAD.size, "block header")
            n, m, words, data_crc, payload_crc, crc = BLOCK_HEAD.unpack(raw)
            if zlib.crc32(b"B" + raw[:-4]) != crc:
                raise FormatError(f"damaged archive (block {blocks + 1} header CRC mismatch)")
            if not (1 <= n <= BLOCK and 1 <= m <= n and -(-n // m) <= MAX_LANES and words <= n + 2 * MAX_LANES):
                raise FormatError(f"damaged archive (block {blocks + 1} header out of range)")
            if skip_payload and src.seekable():
                src.seek(4 * words, 1)
                payload = None
            else:
                payload = read_exact(src, 4 * words, "block data")
                if zlib.crc32(payload) != payload_crc:
                    raise FormatError(f"damaged archive (block {blocks + 1} data CRC mismatch)")
                if skip_payload:
                    payload = None
            blocks += 1
            yield ("B", n, m, data_crc, payload, 4 * words + 1 + BLOCK_HEAD.size)
        elif kind == b"E":
            raw = read_exact(src, END_HEAD.size, "end record")
            total, count, data_crc, crc = END_HEAD.unpack(raw)
            if zlib.crc32(b"E" + raw[:-4]) != crc:
                raise FormatError("damaged archive (end record CRC mismatch)")
            if count != blocks:
                raise FormatError(f"damaged archive ({blocks} blocks, end record says {count})")
            if src.read(1):
                raise FormatError("trailing garbage after the end of the archive")
            yield ("E", total, count, data_crc)
            return
        else:
            raise FormatError(f"damaged archive (unknown record after block {blocks})")


def check_model(head: Header, q: QuantLM, name: str) -> None:
    if head.weights_hash != q.hash:
        raise FormatError(
            f"archive was made with model {head.name!r} (weights sha256 {head.weights_hash.hex()[:16]}…); "
            f"{name!r} has {q.hash.hex()[:16]}… — decompress with --model {head.name}")


def decompress(src: BinaryIO, dst: BinaryIO | None, q: QuantLM, name: str, head: Header | None = None,
               progress: Callable[[int], None] | None = None) -> Stats:
    """Decode one archive from src (header already read if `head` is given); dst None = test only.
    Each block is verified against its CRC32 before it is written."""
    start = time.perf_counter()
    head = head or read_header(src)
    check_model(head, q, name)
    st = Stats(bytes_in=head.size, model=head.name)
    crc = 0
    for rec in read_records(src):
        if rec[0] == "E":
            _, total, _, data_crc = rec
            if total != st.bytes_out or data_crc != crc:
                raise FormatError("damaged archive (length or CRC of the whole input does not match)")
            st.bytes_in += 1 + END_HEAD.size
            break
        _, n, m, data_crc, payload, size = rec
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        try:
            data = code_block(q, m, n, False, words=words, progress=progress)
        except (AssertionError, ValueError, KeyError, RuntimeError) as e:   # constriction on bad data
            raise FormatError(f"damaged archive (block {st.blocks + 1} does not decode: {type(e).__name__})") from None
        if zlib.crc32(data) != data_crc:
            raise FormatError(f"damaged archive (block {st.blocks + 1} decodes to data with the wrong CRC32)")
        if dst is not None:
            dst.write(data)
        crc = zlib.crc32(data, crc)
        st.bytes_in += size
        st.bytes_out += n
        st.blocks += 1
        st.lanes.append(-(-n // m))
    st.seconds = time.perf_counter() - start
    return st


@dataclass
class Listing:
    name: str
    weights_hash: str
    compressed: int
    original: int
    blocks: int
    lanes: list[int]


def list_archive(src: BinaryIO) -> Listing:
    """Sizes and layout from the headers alone (payloads are skipped, not decoded)."""
    head = read_header(src)
    size, lanes = head.size, []
    for rec in read_records(src, skip_payload=True):
        if rec[0] == "E":
            size += 1 + END_HEAD.size
            return Listing(head.name, head.weights_hash.hex(), size, rec[1], rec[2], lanes)
        size += rec[5]
        lanes.append(-(-rec[1] // rec[2]))
