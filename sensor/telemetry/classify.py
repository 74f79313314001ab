"""Classify payload bytes, not flows.

Each payload sample is judged on its own and split into spans of one class:

- ``encrypted``: random-looking bytes (ciphertext, or compressed data that
  does not prove itself compressed);
- ``encoded``: a run of a text alphabet (base64, base32, hex, decimal,
  base85) whose symbols, and where decodable the decoded bytes, look random:
  ciphertext dressed as text;
- ``compressed``: data that *decodes* as the compressed format its header
  claims (gzip, zlib, zstd, zip, xz, 7z, bzip2, PNG, JPEG, GIF, PDF, RIFF
  checked by structure or by a partial decode); a header followed by bytes
  that do not decode is ``encrypted``, and so is a compressed container whose
  decoded content is itself random (gzip of ciphertext);
- ``plain``: text or low-entropy binary;
- ``header``: protocol framing (HTTP heads, TLS handshakes, WebSocket frame
  headers, DNS messages) that carries no bulk data.

A sample is a few dozen bytes of a packet of up to 64 KiB (GSO). The bytes of
the packet the sample did not read (``rest``) take the class of the sample's
*last* span, so a low-entropy prefix in each packet cannot hide a random
remainder, as long as the random part reaches into the sample (at least
TAIL_MIN bytes of it). HTTP heads longer than what the sample showed are
capped at MAX_HEAD bytes; beyond that the rest is ``unknown``, and takes the
class mix of the bytes the flow's other samples judged in the window (it
stays unknown, never encrypted, when there were none).

:class:`StreamJudge` keeps what a flow's earlier samples established (an
HTTP stream, a WebSocket upgrade, a verified compressed body) and turns each
sample into bytes per class, weighted by how many payload bytes it stands
for. A stream that turns opaque mid-way (WebSocket Upgrade, CONNECT,
STARTTLS) is therefore counted from the sample where it changed.

Entropy thresholds depend on the length judged (a short random string cannot
score 8 bits): RANDOM_BITS gives, per length, a threshold below the 1st
percentile of random bytes and above the maximum of English text measured on
300 samples each (random 24 bytes: min 5.98, text 24: max 5.98; random 64:
min 7.12, text 64: max 5.41).
"""

from __future__ import annotations

import binascii
import bz2
import functools
import lzma
import math
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field

from sensor.telemetry.entropy import corrected_bits
from sensor.telemetry.flowstate import PER_CGROUP, FlowTable, Interner
from sensor.telemetry.protocol import HTTP_PREFIXES, dns_query

ENCRYPTED = "encrypted"
ENCODED = "encoded"
COMPRESSED = "compressed"
PLAIN = "plain"
HEADER = "header"
UNKNOWN = "unknown"
CLASSES = (ENCRYPTED, ENCODED, COMPRESSED, PLAIN, HEADER, UNKNOWN)
# The classes counted as encrypted bytes by the rules.
OPAQUE = (ENCRYPTED, ENCODED)

TAIL_MIN = 24  # shortest tail judged on its own
MAX_HEAD = 2048  # an HTTP head longer than this is not a head (most are under 1 KiB)
MIN_JUDGED = 16  # shorter spans are not judged by entropy (too noisy)
# The kernel's first read of a packet (kernel.sample_bytes' default): a
# longer sample that is no DNS query is a small packet read whole.
FIRST_READ = 64


def random_bits(n: int, high_bits: float = 7.0) -> float:
    """Entropy (bits/byte, Chao-Shen) above which n bytes look random.

    Measured thresholds (see the module doc): 16 bytes 5.9, 24 bytes 6.1,
    32 bytes 6.3, 48 bytes 6.6, 64 and more: `high_bits` (7.0 by default).
    """
    if n >= 64:
        return high_bits
    if n >= 48:
        return min(high_bits, 6.6)
    if n >= 32:
        return min(high_bits, 6.3)
    if n >= 24:
        return min(high_bits, 6.1)
    return min(high_bits, 5.9)


def bits(data: bytes | str) -> float:
    """Chao-Shen entropy (bits/symbol). The estimate depends only on how
    many symbols occur once, twice, ... (the count profile), and samples of
    one length share few profiles: memoised on it, a 64-byte sample costs
    one C-level count instead of a Python loop over its values."""
    counts = Counter(data).values()
    return _profile_bits(tuple(sorted(Counter(counts).items())), len(data))


@functools.lru_cache(maxsize=8192)
def _profile_bits(profile: tuple[tuple[int, int], ...], n: int) -> float:
    return corrected_bits([c for c, k in profile for _ in range(k)], n)


_NEVER_UTF8 = bytes([0xC0, 0xC1, *range(0xF5, 0x100)])


def _utf8_decode(data: bytes) -> str | None:
    """`data` as UTF-8 text with multi-byte characters (a sample may cut
    the last one, and the packet may start inside one), else None. Random
    bytes almost never are (24 random bytes: < 1e-4)."""
    if data.translate(None, _NEVER_UTF8) != data:
        return None  # C0, C1, F5..FF never occur in UTF-8 (most random samples stop here)
    lead = 0
    while lead < 3 and lead < len(data) and 0x80 <= data[lead] <= 0xBF:
        lead += 1
    data = data[lead:]
    if data.isascii():
        return None  # ASCII: judged by the other tests
    for cut in range(4):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _utf8_text(data: bytes) -> bool:
    """Valid UTF-8 with multi-byte characters (see _utf8_decode)."""
    return _utf8_decode(data) is not None


def _latin1_read_back(data: bytes) -> bytes | None:
    """The Latin-1 bytes UTF-8 text stands for, when all its characters are
    Latin-1 (U+0000..U+00FF) and some are not ASCII; else None.
    Ciphertext through .decode("latin-1").encode() (1.5x the bytes, valid
    UTF-8) scored low byte entropy and passed as text: read back, it is
    the ciphertext again. Text in Latin-1's range reads back as text."""
    if data.isascii() or b"\xc2" not in data and b"\xc3" not in data:
        return None
    text = _utf8_decode(data)
    if text is None or max(text) > "\xff":
        return None
    return text.encode("latin-1")


_PRINTABLE = bytes([9, 10, 11, 12, 13, *range(32, 127)])


def _binary_share(data: bytes) -> float:
    """Share of bytes outside printable ASCII and whitespace (C speed)."""
    return len(data.translate(None, _PRINTABLE)) / len(data)


def looks_random(data: bytes, high_bits: float = 7.0) -> bool:
    """High entropy for its length, and not text: short text scores high
    entropy (every character distinct), so below 64 bytes at least 30 % of
    the bytes must be outside printable ASCII (random bytes: 63 %), and
    valid UTF-8 text (CJK has high byte entropy) is never random."""
    n = len(data)
    if n < MIN_JUDGED:
        return False
    raw = _latin1_read_back(data)
    if raw is not None:
        return len(raw) >= MIN_JUDGED and looks_random(raw, high_bits)
    need = random_bits(n, high_bits)
    # Fast path: with at least 85 % distinct values in 32 or more bytes, the
    # Chao-Shen estimate is above the threshold whatever the profile (the
    # lowest profiles, one repeated value or all pairs, score 6.9 at 32
    # bytes, 7.7 at 64), so most random samples skip the estimate.
    if n >= 32 and need <= 7.0 and len(set(data)) >= 0.85 * n:
        h = need
    else:
        h = bits(data)
    if h < need - 0.4:
        return False
    share = _binary_share(data)
    # Within 0.4 bits of the threshold, mostly non-printable bytes decide:
    # 0.4 % of random 64-byte samples score under 7.0, and text is never
    # half non-printable.
    if h < need and share < 0.5:
        return False
    if n < 64 and share < 0.3:
        return False
    return not _utf8_text(data)


# --- encoded randomness -------------------------------------------------------

_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_B32 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567=")
_B32L = frozenset(b"abcdefghijklmnopqrstuvwxyz234567=")
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_B85 = frozenset(range(33, 118))  # Ascii85 ('!'..'u'); Z85 differs but shares most symbols

# Shortest run judged per alphabet: long enough that the decoded bytes
# number at least 24 (the shortest length with a usable threshold).
_MIN_RUN = {"hex": 48, "decimal": 48, "base32": 40, "base64": 32, "base85": 40}
# log2 of the alphabet size: a run's symbol entropy is normalised by it.
_ALPHABET_BITS = {"hex": 4.0, "decimal": math.log2(10), "base32": 5.0, "base64": 6.0, "base85": math.log2(85)}
# Normalised symbol entropy above which a run looks random. Measured on 300
# runs of 64 symbols: random base64 p5 0.95, random hex p5 0.96, random
# base85 p5 0.95; text that fits the base64 alphabet (identifiers) max 0.9
# at 32 symbols, 0.84 at 64.
ENCODED_RANDOM = 0.88


# Text that fits an alphabet (identifiers, paths, words) keeps one character
# class (lower, upper, digit, other) for several symbols; random symbols
# change class often: expected share of adjacent pairs that change class is
# 0.64 for base64, 0.47 for hex, 0.30 for base32, 0.73 for base85 (0 for
# decimal). Thresholds sit well below those means (a binomial tail under
# 1 % for the shortest run judged) and above identifiers and paths.
_MIN_CHANGES = {"hex": 0.25, "decimal": 0.0, "base32": 0.04, "base64": 0.4, "base85": 0.5}


def _cls(b: int) -> int:
    if 97 <= b <= 122:
        return 0
    if 65 <= b <= 90:
        return 1
    if 48 <= b <= 57:
        return 2
    return 3


def _distinct_trigrams(run: bytes) -> float:
    n = len(run) - 2
    return len({run[i : i + 3] for i in range(n)}) / n if n > 0 else 0.0


def _class_changes(run: bytes) -> float:
    if len(run) < 2:
        return 0.0
    c = [_cls(b) for b in run]
    return sum(1 for a, b in zip(c, c[1:], strict=False) if a != b) / (len(c) - 1)


@dataclass(frozen=True, slots=True)
class Run:
    start: int
    end: int
    alphabet: str


def _alphabet(run: bytes) -> str | None:
    s = set(run)
    if s <= _DIGITS:
        return "decimal"
    if s <= _HEXDIGITS:
        return "hex"
    if s <= _B32 or s <= _B32L:
        return "base32"
    if s <= _B64:
        return "base64"
    if s <= _B85:
        return "base85"
    return None


_B64_RUN = re.compile(rb"[A-Za-z0-9+/=_-]{%d,}" % 32)
_B85_RUN = re.compile(rb"[!-u]{%d,}" % 40)


def _scan(data: bytes, pattern: re.Pattern[bytes]) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(data)]


def encoded_runs(data: bytes, min_run: dict[str, int] = _MIN_RUN) -> list[Run]:
    """Maximal runs of base64-alphabet symbols, each named by the smallest
    alphabet that covers it (decimal, hex, base32, base64), and runs of
    base85 symbols that hold no such run; only runs long enough to judge."""
    out: list[Run] = []
    for i, j in _scan(data, _B64_RUN):
        alpha = _alphabet(data[i:j])
        if alpha is not None and j - i >= min_run[alpha]:
            out.append(Run(i, j, alpha))
    for i, j in _scan(data, _B85_RUN):
        if not any(r.start < j and i < r.end for r in out):
            out.append(Run(i, j, "base85"))
    return sorted(out, key=lambda r: r.start)


# Characters that split an alphabet run into pieces shorter than _MIN_RUN
# (base64 with a space every 16 symbols, hex as "a3 5f ..", "a3:5f:.."):
# without them the pieces make one run again.
_SEPARATORS = b" \t\r\n:,;"
_SEPARATED_ALPHABETS = frozenset({"hex"})  # the others fit prose with its spaces taken out
# Hex bytes one by one ("a3 5f .." is three characters a byte) fill 64
# bytes with 42 symbols: judged from 40 (20 bytes decoded) when separated.
_MIN_SEPARATED_RUN = {**_MIN_RUN, "hex": 40}
_NOT_HEX = bytes(b for b in range(256) if b not in _HEXDIGITS)


def separated_runs(data: bytes) -> list[Run]:
    """Runs of hex symbols broken up by separators
    (_SEPARATORS), each spanning at least one: found in `data` with the
    separators taken out, in `data`'s offsets (the separators within
    included). judge_run judges such a run without its separators."""
    if len(data.translate(None, _NOT_HEX)) < _MIN_SEPARATED_RUN["hex"]:
        return []  # too few hex digits for a run (prose: most samples stop here)
    compact = data.translate(None, _SEPARATORS)
    if len(compact) == len(data):
        return []
    where = [i for i, b in enumerate(data) if b not in _SEPARATORS]
    out = []
    for r in encoded_runs(compact, _MIN_SEPARATED_RUN):
        i, j = where[r.start], where[r.end - 1] + 1
        if r.alphabet in _SEPARATED_ALPHABETS and j - i > r.end - r.start:
            out.append(Run(i, j, r.alphabet))
    return out


def _decoded_views(run: bytes, alphabet: str) -> list[bytes]:
    """The run decoded at every alignment (a sample starts mid-stream)."""
    views: list[bytes] = []
    if alphabet == "hex":
        for a in (0, 1):
            s = run[a:]
            views.append(binascii.unhexlify(s[: len(s) // 2 * 2]))
    elif alphabet == "base64":
        std = run.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
        for a in range(4):
            s = std[a:]
            s = s[: len(s) // 4 * 4]
            try:
                views.append(binascii.a2b_base64(s))
            except binascii.Error:
                continue
    elif alphabet == "base32":
        import base64

        s0 = run.upper().rstrip(b"=")
        for a in range(8):
            s = s0[a:]
            s = s[: len(s) // 8 * 8]
            try:
                views.append(base64.b32decode(s))
            except (binascii.Error, ValueError):
                continue
    return views


def judge_run(run: bytes, alphabet: str, high_bits: float = 7.0) -> bool:
    """Does an alphabet run carry random bytes?

    The symbols' entropy normalised to the alphabet must be high, and where
    the alphabet decodes, the decoded bytes at the best (lowest-entropy)
    alignment must look random too: base64 of text has random-looking
    symbols but decodes to text at one alignment.
    """
    if bits(run) / _ALPHABET_BITS[alphabet] < ENCODED_RANDOM:
        return False
    if _class_changes(run) < _MIN_CHANGES[alphabet]:
        return False
    if _distinct_trigrams(run) < 0.8:
        return False  # periodic: 0123456789012345..., abababab...
    views = [v for v in _decoded_views(run, alphabet) if len(v) >= MIN_JUDGED]
    if not views:
        return True
    # With up to 8 alignments tried, one wrong alignment of random symbols
    # may score a little low; text at its right alignment scores far lower
    # (base64 of English: about 4.5 bits), hence the 0.5-bit margin.
    return min(bits(v) - random_bits(len(v), high_bits) for v in views) >= -0.5


# --- compression, proven ----------------------------------------------------------

GZIP, ZLIB, ZSTD, ZIP, XZ, SEVENZ, BZIP2, PNG, JPEG, GIF, PDF, RIFF = (
    "gzip",
    "zlib",
    "zstd",
    "zip",
    "xz",
    "7z",
    "bzip2",
    "png",
    "jpeg",
    "gif",
    "pdf",
    "riff",
)


@dataclass(frozen=True, slots=True)
class Proof:
    """What a compression header turned out to be.

    ok: the bytes decode (or their structure checks out) as `fmt`;
    decoded: the first decoded bytes, when a decoder produced some;
    encrypted: the container says its content is encrypted (zip -e), or its
    decoded content is random.
    """

    fmt: str
    ok: bool
    decoded: bytes = b""
    encrypted: bool = False


def _inflate(data: bytes, wbits: int) -> bytes | None:
    """Partial inflate: the output so far, or None when the input is not
    deflate data. A truncated stream is fine (samples are short)."""
    try:
        d = zlib.decompressobj(wbits)
        return d.decompress(data, 4096)
    except zlib.error:
        return None


def _zstd(data: bytes) -> bytes | None:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    try:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)[:4096]
    except zstandard.ZstdError:
        return None


def _zip(data: bytes) -> Proof:
    if len(data) < 30:
        return Proof(ZIP, True)  # too short to say more; the magic is 4 bytes
    _sig, _ver, flags, method, _t, _d, _crc, _csz, _usz, nlen, xlen = struct.unpack("<IHHHHHIIIHH", data[:30])
    if flags & 0x1 or method == 99:  # traditional or AES encryption
        return Proof(ZIP, True, encrypted=True)
    body = data[30 + nlen + xlen :]
    if method == 0:
        return Proof(ZIP, True, body)
    if method == 8:
        if not body:
            return Proof(ZIP, True)
        out = _inflate(body, -15)
        return Proof(ZIP, out is not None, out or b"")
    return Proof(ZIP, method in (12, 14, 93, 95), b"")  # bzip2, lzma, zstd, xz: structure only


def _png(data: bytes) -> bool:
    i = 8
    while i + 8 <= len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        ctype = data[i + 4 : i + 8]
        if not ctype.isalpha() or n > 1 << 31:
            return False
        if i + 12 + n <= len(data):
            (crc,) = struct.unpack(">I", data[i + 8 + n : i + 12 + n])
            if zlib.crc32(data[i + 4 : i + 8 + n]) != crc:
                return False
        i += 12 + n
    return True


_JPEG_IDS = {0xE0: (b"JFIF\0", b"JFXX\0"), 0xE1: (b"Exif\0", b"http:")}


def _jpeg(data: bytes) -> bool:
    """Segments after SOI chain by their lengths; the first is APP0 (JFIF)
    or APP1 (Exif/XMP) with its identifier, or the sample shows a second
    valid marker. Random bytes after FF D8 FF rarely do both."""
    i, segments = 2, 0
    while i + 4 <= len(data):
        m = data[i + 1]
        if data[i] != 0xFF or not (0xC0 <= m <= 0xFE) or 0xD0 <= m <= 0xD9:
            return False
        if m == 0xDA:  # start of scan: entropy-coded data follows
            return segments > 0
        (n,) = struct.unpack(">H", data[i + 2 : i + 4])
        if n < 2:
            return False
        if segments == 0 and m in _JPEG_IDS:
            ident = data[i + 4 : i + 9]
            if len(ident) == 5 and ident not in _JPEG_IDS[m]:
                return False
            if len(ident) == 5:
                return True
        segments += 1
        i += 2 + n
    return segments > 1 or len(data) < 12


# The first byte of every header prove() knows (zlib's: CMF with method 8
# and a window of at most 32 KiB, 0x08 .. 0x78): most samples (ciphertext,
# text) start with none of them and skip the dozen prefix tests.
_PROVE_FIRST = frozenset({0x1F, 0x28, 0x50, 0xFD, 0x37, 0x42, 0x89, 0xFF, 0x47, 0x25, 0x52, *range(0x08, 0x79, 0x10)})


def prove(data: bytes) -> Proof | None:
    """None when `data` does not start with a compressed format's header;
    else whether it really is that format (see Proof)."""
    if not data or data[0] not in _PROVE_FIRST:
        return None
    if data.startswith(b"\x1f\x8b"):
        out = _inflate(data, 31)
        return Proof(GZIP, out is not None, out or b"")
    if len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (data[0] << 8 | data[1]) % 31 == 0:
        if data[1] & 0x20:  # preset dictionary: not used by HTTP deflate or zlib users
            return None
        out = _inflate(data, 15)
        return Proof(ZLIB, True, out) if out is not None else None  # 2 bytes are a weak magic: unproven -> no claim
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        # A zstd compressed block (up to 128 KiB) decodes only once whole, so
        # "no error yet" proves nothing: zstd counts as proven only when the
        # sample itself decoded to something (raw, RLE or small blocks).
        # Real zstd streams whose first block is large stay unproven.
        out = _zstd(data)
        return Proof(ZSTD, bool(out), out or b"")
    if data.startswith(b"PK\x03\x04"):
        return _zip(data)
    if data.startswith(b"\xfd7zXZ\x00"):
        ok = len(data) < 12 or zlib.crc32(data[6:8]) == struct.unpack("<I", data[8:12])[0]
        if ok and len(data) > 12:
            try:
                out = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data, 4096)
            except lzma.LZMAError:
                return Proof(XZ, False)
            return Proof(XZ, True, out)
        return Proof(XZ, ok)
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        ok = len(data) < 32 or zlib.crc32(data[12:32]) == struct.unpack("<I", data[8:12])[0]
        return Proof(SEVENZ, ok)
    if data.startswith(b"BZh") and len(data) >= 4:
        if not 0x31 <= data[3] <= 0x39:
            return Proof(BZIP2, False)
        if len(data) >= 10 and data[4:10] not in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90"):
            return Proof(BZIP2, False)
        try:
            bz2.BZ2Decompressor().decompress(data)
        except OSError:
            return Proof(BZIP2, False)
        return Proof(BZIP2, True)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Proof(PNG, _png(data))
    if data.startswith(b"\xff\xd8\xff"):
        return Proof(JPEG, _jpeg(data))
    if data.startswith((b"GIF87a", b"GIF89a")):
        return Proof(GIF, True)
    if data.startswith(b"%PDF-"):
        return Proof(PDF, len(data) < 8 or data[5:8].replace(b".", b"").isdigit())
    if data.startswith(b"RIFF"):
        return Proof(RIFF, len(data) < 12 or data[8:12] in (b"WAVE", b"AVI ", b"WEBP", b"RMID", b"ACON"))
    return None


# --- one sample ---------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """A sample split into spans of one class; `rest` is the class of the
    packet's bytes beyond the sample."""

    spans: list[tuple[str, int]] = field(default_factory=list)
    rest: str = PLAIN
    encoding: str | None = None  # alphabet of an encoded-random run
    compression: str | None = None  # a format proven by decoding
    fake_compression: str | None = None  # a format claimed by a header that did not decode
    protocol: str | None = None  # framing recognised in this sample (http, websocket, tls, ...)
    pending: bytes | None = None  # a compression header alone, to prove with the next sample
    extent: int | None = None  # payload bytes the framing at the sample's start announced (TLS record)

    def add(self, cls: str, n: int) -> None:
        if n > 0:
            self.spans.append((cls, n))

    def bytes_of(self, cls: str) -> int:
        return sum(n for c, n in self.spans if c == cls)


# Formats proven by decoding need some compressed bytes after the header: a
# header alone (sent in its own packet) proves nothing yet, and is proven
# with the next sample of the stream (StreamState.pending).
_DECODED = frozenset({GZIP, ZLIB, ZSTD, ZIP, XZ})
# Media and documents, proven by their header's form alone (a signature, a
# chunk CRC, a segment chain: nothing decodes). Their bytes past the sample
# continue as compressed only in an HTTP body (an image upload); on a raw
# stream "GIF89a" made a whole connection's ciphertext "compressed".
_MEDIA = frozenset({PNG, JPEG, GIF, PDF, RIFF})
MIN_PROOF = 32


def judge_body(data: bytes, v: Verdict, high_bits: float = 7.0, prefix: bytes = b"") -> None:
    """Classify bytes with no protocol framing left: runs of encoded
    symbols, the other bytes by entropy, the tail on its own. `prefix`: a
    compression header the stream sent before `data` (proven together)."""
    if not data:
        return
    proof = prove(prefix + data) if prefix else prove(data)
    if proof is not None and not prefix and proof.ok and proof.fmt in _DECODED and len(data) < MIN_PROOF:
        v.add(HEADER, len(data))
        v.rest = PLAIN
        v.pending = data
        return
    if proof is not None:
        if proof.ok and not proof.encrypted:
            inner = proof.decoded
            if len(inner) >= 32 and looks_random(inner[:256], high_bits):
                v.fake_compression = proof.fmt + " of random content"
                v.add(ENCRYPTED, len(data))
                v.rest = ENCRYPTED
            else:
                v.compression = proof.fmt
                v.add(COMPRESSED, len(data))
                v.rest = COMPRESSED
            return
        v.fake_compression = proof.fmt if not proof.ok else proof.fmt + " (encrypted)"
        v.add(ENCRYPTED, len(data))
        v.rest = ENCRYPTED
        return
    if looks_random(data, high_bits):
        v.add(ENCRYPTED, len(data))
        v.rest = ENCRYPTED
        return
    runs = encoded_runs(data)
    separated = [
        r
        for r in separated_runs(data)
        if judge_run(data[r.start : r.end].translate(None, _SEPARATORS), r.alphabet, high_bits)
    ]
    if separated:
        # a separated run judged random replaces the pieces inside it
        runs = sorted(
            separated + [r for r in runs if not any(s.start < r.end and r.start < s.end for s in separated)],
            key=lambda r: r.start,
        )
    pos = 0
    last = PLAIN
    for r in runs:
        if r.start > pos:
            last = _judge_gap(data[pos : r.start], v, high_bits)
        if r in separated or judge_run(data[r.start : r.end], r.alphabet, high_bits):
            v.add(ENCODED, r.end - r.start)
            v.encoding = v.encoding or r.alphabet
            last = ENCODED
        else:
            v.add(PLAIN, r.end - r.start)
            last = PLAIN
        pos = r.end
    if pos < len(data):
        tail = data[pos:]
        if last == ENCODED and separated and not tail.translate(None, _SEPARATORS):
            v.add(ENCODED, len(tail))  # a separated run's last separator: the packet goes on with it
        else:
            last = _judge_gap(tail, v, high_bits)
    v.rest = last


def _judge_gap(gap: bytes, v: Verdict, high_bits: float) -> str:
    """Bytes between encoded runs: random, or a low-entropy prefix with a
    random tail, or plain. Returns the class of the gap's last byte."""
    if looks_random(gap, high_bits):
        v.add(ENCRYPTED, len(gap))
        return ENCRYPTED
    for tail in (32, TAIL_MIN):
        if len(gap) >= tail + 8 and looks_random(gap[-tail:], high_bits):
            # as far back as it stays random, 16 bytes at a time (a whole
            # small packet is read: 64 bytes of text, then 63 random)
            while len(gap) >= tail + 16 + 8 and looks_random(gap[-(tail + 16) :], high_bits):
                tail += 16
            v.add(PLAIN, len(gap) - tail)
            v.add(ENCRYPTED, tail)
            return ENCRYPTED
    v.add(PLAIN, len(gap))
    return PLAIN


# --- protocol framing -----------------------------------------------------------


def websocket_frame(data: bytes) -> tuple[int, bytes] | None:
    """(header length, unmasked payload in the sample) of a client WebSocket
    frame (RFC 6455: clients always mask), or None when `data` is not one.
    A frame may span packets, so its length is not checked against the
    packet's."""
    if len(data) < 6:
        return None
    b0, b1 = data[0], data[1]
    if b0 & 0x70 or (b0 & 0x0F) not in (0, 1, 2, 8, 9, 10) or not b1 & 0x80:
        return None
    n = b1 & 0x7F
    i = 2
    if n == 126:
        if len(data) < 8:
            return None
        (n,) = struct.unpack(">H", data[2:4])
        i = 4
    elif n == 127:
        if len(data) < 14:
            return None
        (n,) = struct.unpack(">Q", data[2:10])
        i = 10
    if n > (1 << 40):
        return None
    key = data[i : i + 4]
    i += 4
    body = data[i : i + n]
    return i, bytes(b ^ key[j % 4] for j, b in enumerate(body))


_XOR = [bytes(i ^ k for i in range(256)) for k in range(256)]


def unmask_mid_frame(data: bytes) -> bytes | None:
    """The sample unmasked, when it looks like masked text seen from inside
    a WebSocket frame (a packet need not start at a frame header).

    XOR with a 4-byte key cancels between bytes 4 apart: for masked text,
    data[i] ^ data[i + 4] is text XOR text, below 0x80; for random bytes,
    masked or not, half of those have the high bit (60 of them all below
    0x80 by chance: under 1e-6 at the 80 % used here). Then each of the 4
    key bytes is the one that makes its column most printable, and the
    unmasked bytes are judged like any other (base64 of ciphertext, masked,
    is still encoded randomness). None when the test fails."""
    n = len(data) - 4
    if n < 28:
        return None
    low = sum(1 for a, b in zip(data, data[4:], strict=False) if (a ^ b) < 0x80)
    if low < 0.8 * n:
        return None
    # a new frame may start inside the sample: its header, then a new key
    for i in range(4, len(data) - 6):
        if data[i] & 0x7F in (0x00, 0x01, 0x02) and data[i + 1] & 0x80:
            frame = websocket_frame(data[i:])
            if frame is not None and len(frame[1]) >= 8 and _binary_share(frame[1]) < 0.2:
                return _unmask_guess(data[:i]) + frame[1]
    return _unmask_guess(data)


_ALNUM_SPACE = b" 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _unmask_guess(data: bytes) -> bytes:
    """XOR each of the 4 columns with the key byte that makes it most
    alphanumeric-or-space: printable alone is ambiguous (a key off by 0x10
    keeps base64 printable but scrambles it into punctuation), while
    letters, digits and spaces pin the key for text and for base64 alike."""
    out = bytearray(data)
    for phase in range(4):
        col = data[phase::4]
        if not col:
            continue
        best = max(range(256), key=lambda k: len(col) - len(col.translate(_XOR[k]).translate(None, _ALNUM_SPACE)))
        out[phase::4] = col.translate(_XOR[best])
    return bytes(out)


def _tls_record(data: bytes) -> tuple[int, int] | None:
    """(content type, record length) of a TLS record header."""
    if len(data) >= 5 and data[0] in (0x14, 0x15, 0x16, 0x17) and data[1] == 0x03 and data[2] <= 0x04:
        return data[0], struct.unpack(">H", data[3:5])[0]
    return None


@dataclass(slots=True)
class StreamState:
    """What a flow's earlier samples established."""

    http: bool = False
    websocket: bool = False
    compressed: str | None = None  # a body proven compressed continues
    pending: bytes | None = None  # a compression header that came alone


class StreamJudge:
    """Per-flow framing memory plus the per-sample classifier."""

    def __init__(self, high_bits: float = 7.0) -> None:
        self.high_bits = high_bits

    def judge(
        self, data: bytes, payload_len: int, state: StreamState, socket_start: bool, transport: int = 6
    ) -> Verdict:
        """Classify one sample of a packet carrying `payload_len` payload
        bytes; updates `state`."""
        v = Verdict()
        payload_len = max(payload_len, len(data))
        if not data:
            return v
        if transport == 6:
            self._tcp(data, payload_len, state, socket_start, v)
        else:
            judge_body(data, v, self.high_bits)
        return v

    def _tcp(self, data: bytes, payload_len: int, state: StreamState, socket_start: bool, v: Verdict) -> None:
        if data.startswith(HTTP_PREFIXES):
            state.http = True
            state.compressed = None
            v.protocol = "http"
            head, sep, body = data.partition(b"\r\n\r\n")
            lower = head.lower()
            if b"upgrade: websocket" in lower:
                state.websocket = True
            if not sep:
                # A head longer than the sample, unless its tail is random:
                # a request line in front of ciphertext is not a head.
                for tail in (32, TAIL_MIN):
                    if len(data) >= tail + 8 and looks_random(data[-tail:], self.high_bits):
                        v.add(HEADER, len(data) - tail)
                        v.add(ENCRYPTED, tail)
                        v.rest = ENCRYPTED
                        return
                v.add(HEADER, len(data))
                v.rest = HEADER  # capped at MAX_HEAD by weigh()
                return
            v.add(HEADER, len(head) + 4)
            self._body(body, state, v)
            return
        tls = _tls_record(data)
        if tls is not None:
            ctype, n = tls
            v.protocol = "tls"
            # handshakes are framing, but only at a socket's start: a TLS
            # header on every packet is not a handshake
            cls = HEADER if ctype in (0x14, 0x15, 0x16) and socket_start else ENCRYPTED
            v.extent = n + 5
            v.add(HEADER, 5)
            v.add(cls, len(data) - 5)
            v.rest = cls if n + 5 >= payload_len else ENCRYPTED
            return
        if state.websocket:
            frame = websocket_frame(data)
            unmasked = unmask_mid_frame(data)
            if frame is not None:
                hlen, body = frame
                fv = Verdict(protocol="websocket")
                fv.add(HEADER, hlen)
                if body:
                    judge_body(body, fv, self.high_bits)
                    fv.compression = None  # compressed frames need permessage-deflate state: judged by bytes
                # bytes inside a frame can parse as a frame header by chance:
                # when the "frame" is opaque but the bytes are masked text
                # seen mid-frame, the latter wins
                if unmasked is None or not (fv.bytes_of(ENCRYPTED) + fv.bytes_of(ENCODED)):
                    v.spans, v.rest, v.encoding, v.protocol = fv.spans, fv.rest, fv.encoding, fv.protocol
                    return
            if unmasked is not None:
                # a packet that starts inside a masked frame: judged unmasked
                v.protocol = "websocket"
                judge_body(unmasked, v, self.high_bits)
                v.compression = None
                return
        if state.compressed is not None and looks_random(data, self.high_bits):
            # the continuation of a body proven compressed at its start
            v.compression = state.compressed
            v.add(COMPRESSED, len(data))
            v.rest = COMPRESSED
            return
        prefix, state.pending = state.pending or b"", None
        judge_body(data, v, self.high_bits, prefix)
        if v.compression is not None and (state.http or v.compression not in _MEDIA):
            state.compressed = v.compression
        state.pending = v.pending

    def judge_inside(self, data: bytes, offset: int, start: Verdict, state: StreamState, transport: int = 6) -> Verdict:
        """Classify a read from inside a packet (the kernel's second read,
        at payload offset `offset`) whose start `start` judged. The stream
        state is read, never changed: framing and compression are set by
        the starts of packets (judge() runs on this packet's start first).

        Inside a TLS handshake record the start announced, bytes are
        framing; inside an HTTP head whose end the start did not show, a
        read with a line break is head, one with the head's end is head
        then body; masked WebSocket text is unmasked; random bytes continue
        a body proven compressed; anything else is judged as a body."""
        v = Verdict()
        if not data:
            return v
        if transport == 6:
            if start.rest == HEADER and start.extent is not None and offset + len(data) <= start.extent:
                v.protocol = start.protocol
                v.add(HEADER, len(data))
                v.rest = HEADER
                return v
            if start.rest == HEADER and start.protocol == "http" and offset < MAX_HEAD:
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    v.add(HEADER, len(head) + 4)
                    if body:
                        judge_body(body, v, self.high_bits)
                    else:
                        v.rest = PLAIN
                    v.pending = None
                    return v
                if b"\r\n" in data:
                    v.add(HEADER, len(data))
                    v.rest = HEADER
                    return v
            if state.websocket:
                unmasked = unmask_mid_frame(data)
                if unmasked is not None:
                    v.protocol = "websocket"
                    judge_body(unmasked, v, self.high_bits)
                    v.compression = v.pending = None
                    return v
            if state.compressed is not None and looks_random(data, self.high_bits):
                v.compression = state.compressed
                v.add(COMPRESSED, len(data))
                v.rest = COMPRESSED
                return v
        judge_body(data, v, self.high_bits)
        v.pending = None
        return v

    def _body(self, body: bytes, state: StreamState, v: Verdict) -> None:
        state.pending = None
        if not body:
            v.rest = PLAIN  # a body, if any, starts in the next packet
            return
        judge_body(body, v, self.high_bits)
        state.compressed = v.compression
        state.pending = v.pending


def _split_point(data: bytes) -> int:
    """Where a small packet read whole is cut into its two reads: after the
    first read, or at an edge of an encoded run across it (cut there, each
    piece was too short to judge: hex, base64 or base32 across offset 64
    passed as text); 0: not cut."""
    cut = FIRST_READ
    for r in encoded_runs(data) + separated_runs(data):
        if r.start < cut < r.end:
            cut = r.end if len(data) - r.end >= MIN_JUDGED else r.start
    return cut if MIN_JUDGED <= cut <= len(data) - MIN_JUDGED else 0


def weigh(v: Verdict, sample_len: int, payload_len: int) -> dict[str, float]:
    """Bytes per class of one packet: the sample's spans, and the packet's
    unsampled remainder as the sample's last class (HEADER capped)."""
    out: dict[str, float] = {}
    for cls, n in v.spans:
        out[cls] = out.get(cls, 0.0) + n
    rest = max(0, payload_len - sample_len)
    if rest:
        if v.rest == HEADER:
            head = min(rest, max(0, MAX_HEAD - sample_len))
            out[HEADER] = out.get(HEADER, 0.0) + head
            if rest - head:
                out[UNKNOWN] = out.get(UNKNOWN, 0.0) + rest - head
        else:
            out[v.rest] = out.get(v.rest, 0.0) + rest
    return out


def weigh_pair(
    start: Verdict, start_len: int, inside: Verdict, inside_len: int, inside_off: int, payload_len: int
) -> dict[str, float]:
    """Bytes per class of a packet read twice: at its start (`start_len`
    bytes) and at payload offset `inside_off` (`inside_len` bytes). The
    start's verdict covers the packet up to the second read, the second
    read's the rest. Between the two reads, when the start's last class is
    not the class the second read begins with, the class changed somewhere
    unseen: those bytes are UNKNOWN, and take the mix of the bytes the
    window judged (ByteClasses.scaled_to), framing excluded."""
    payload_len = max(payload_len, start_len + inside_len)
    inside_off = max(start_len, min(inside_off, payload_len - inside_len))
    out = weigh(start, start_len, inside_off)
    gap = inside_off - start_len
    if gap and start.rest != HEADER and inside.spans and inside.spans[0][0] != start.rest:
        out[start.rest] -= gap
        if out[start.rest] <= 0:
            del out[start.rest]
        out[UNKNOWN] = out.get(UNKNOWN, 0.0) + gap
    for cls, n in weigh(inside, inside_len, payload_len - inside_off).items():
        out[cls] = out.get(cls, 0.0) + n
    return out


# --- a flow's bytes over a window ---------------------------------------------------


@dataclass(slots=True)
class ByteClasses:
    """Payload bytes per class: while a window fills, weighted sample bytes;
    at its close, the flow's payload bytes split by those weights."""

    bytes: dict[str, float] = field(default_factory=dict)
    encoding: str | None = None
    compression: str | None = None
    fake_compression: str | None = None
    carried: bool = False  # no sample this window: the flow's last mix was used

    def add(self, weights: dict[str, float], scale: float) -> tuple[float, float]:
        """Adds weights times scale; returns the bytes added and how many
        of them are opaque."""
        total = opaque = 0.0
        for cls, n in weights.items():
            n *= scale
            self.bytes[cls] = self.bytes.get(cls, 0.0) + n
            total += n
            if cls in OPAQUE:
                opaque += n
        return total, opaque

    def total(self) -> float:
        return sum(self.bytes.values())

    def get(self, cls: str) -> int:
        return int(self.bytes.get(cls, 0.0))

    def opaque(self) -> int:
        return sum(self.get(c) for c in OPAQUE)

    def fractions(self) -> dict[str, float]:
        t = self.total()
        return {c: n / t for c, n in self.bytes.items()} if t > 0 else {}

    def scaled_to(self, payload: int) -> ByteClasses:
        """The flow's payload split by these weights. Bytes no sample could
        judge (the unseen rest of a packet behind a long HTTP head) take the
        mix of the bytes that were judged in the window, framing excluded;
        they stay unknown when nothing was."""
        out = ByteClasses(encoding=self.encoding, compression=self.compression, fake_compression=self.fake_compression)
        fr = self.fractions()
        unknown = fr.pop(UNKNOWN, 0.0)
        judged = {c: f for c, f in fr.items() if c != HEADER}
        total = sum(judged.values())
        if unknown and total > 0:
            for c, f in judged.items():
                fr[c] += unknown * f / total
        elif unknown:
            fr[UNKNOWN] = unknown
        out.bytes = {c: float(round(f * payload)) for c, f in fr.items()}
        return out

    def as_dict(self) -> dict[str, int]:
        return {c: self.get(c) for c in CLASSES if self.get(c)}


# Distinct class mixes kept shared (a flood of flows carrying the same kind
# of bytes stores one mix, not one per flow); a cache, cleared when full.
MAX_SHARED_MIXES = 4096


class FlowClassifier:
    """Turns each flow's samples into bytes per class, remembering each
    flow's framing state and its last mix (bounded, oldest forgotten)."""

    def __init__(self, max_flows: int = 65536, high_bits: float = 7.0, per_cgroup: int = PER_CGROUP) -> None:
        self.judge_ = StreamJudge(high_bits)
        # framing state per sending socket (flow key + socket cookie), only
        # for sockets whose samples established some (one without is judged
        # from a fresh StreamState). Per socket, not per flow: sockets of one
        # container to one destination interleave their samples, and one
        # socket's HTTP head or first packet would reset another's proven
        # compressed body (a real gzip upload then read as ciphertext), or
        # one socket's proven gzip body would make another's ciphertext read
        # as its continuation (an exfiltration hidden behind a decoy upload).
        self.streams: FlowTable[StreamState] = FlowTable(per_cgroup, max_flows)
        # the last window's class fractions, in CLASSES order
        self.last_mix: FlowTable[tuple[float, ...]] = FlowTable(per_cgroup, max_flows)
        self._mixes: Interner[tuple[float, ...]] = Interner(MAX_SHARED_MIXES)

    def add(
        self,
        key: tuple[int, str, int, int],
        acc: ByteClasses,
        data: bytes,
        payload_len: int,
        weight: float,
        socket_start: bool,
        first: bool = False,
        second: bytes = b"",
        second_off: int = 0,
        cookie: int = 0,
    ) -> tuple[float, float]:
        """One sample of `key`: classify it and add its packet's bytes per
        class, times `weight` (how many such packets it stands for), to the
        window's `acc`. socket_start: among the first packets of a socket
        named TLS, where handshake records are framing; first: the socket's
        first payload (framing state starts over); second: a read from inside the packet at payload
        offset second_off (weigh_pair); cookie: the sending socket (framing
        state is its own; 0: unknown, the flow's). Returns the bytes it
        added to `acc` and how many of them are opaque."""
        skey = (*key, cookie)
        state = self.streams.get(skey)
        if state is None or first:
            state = StreamState()
        # DNS: the names are the payload, judged by SL-EXF-003. Only a query
        # is: anything else sent to port 53 is judged by its bytes.
        dns = key[2] == 53 and dns_query(data, key[3], payload_len)
        if not dns and not first and not second and len(data) > FIRST_READ:
            # a small packet the kernel read whole (at most two reads long):
            # judged as the two reads it stands for, so cleartext at its end
            # does not leave ciphertext in its middle to the start's class
            # (a socket's first payload is judged whole, as its protocol is)
            cut = _split_point(data)
            if cut:
                data, second, second_off = data[:cut], data[cut:], cut
        if dns:
            v = Verdict(rest=HEADER, protocol="dns")
            v.add(HEADER, len(data))
        else:
            v = self.judge_.judge(data, payload_len, state, socket_start, key[3])
        if second and not dns and second_off >= len(data):
            v2 = self.judge_.judge_inside(second, second_off, v, state, key[3])
            added = acc.add(weigh_pair(v, len(data), v2, len(second), second_off, payload_len), weight)
            acc.encoding = acc.encoding or v2.encoding
            acc.fake_compression = acc.fake_compression or v2.fake_compression
        else:
            added = acc.add(weigh(v, len(data), payload_len), weight)
        if state.http or state.websocket or state.compressed is not None or state.pending is not None:
            self.streams.put(skey, state)
        else:
            self.streams.pop(skey)  # nothing established: a fresh state is the same
        acc.encoding = acc.encoding or v.encoding
        acc.compression = v.compression or acc.compression
        acc.fake_compression = acc.fake_compression or v.fake_compression
        return added

    def estimate(self, key: tuple[int, str, int, int], acc: ByteClasses | None, payload: int) -> ByteClasses:
        """The window's payload bytes of `key` per class."""
        if acc is not None and acc.total() > 0:
            self.last_mix.put(key, self._shared_mix(acc.fractions()))
            return acc.scaled_to(payload)
        mix = self.last_mix.get(key)
        out = ByteClasses(carried=mix is not None)
        if payload:
            out.bytes = (
                {c: round(f * payload) for c, f in zip(CLASSES, mix, strict=True) if f}
                if mix
                else {UNKNOWN: float(payload)}
            )
        return out

    def _shared_mix(self, fractions: dict[str, float]) -> tuple[float, ...]:
        return self._mixes(tuple(fractions.get(c, 0.0) for c in CLASSES))

    def end_window(self) -> None:
        """Nothing to reset: framing and mixes outlive windows (bounded)."""

    def forget_cgroups(self, ids: set[int]) -> None:
        self.streams.forget_cgroups(ids)
        self.last_mix.forget_cgroups(ids)


# --- datagram protocols -----------------------------------------------------------

QUIC = "quic"
DTLS = "dtls"
WIREGUARD = "wireguard"
_QUIC_VERSIONS = (0x00000001, 0x6B3343CF)  # v1 (RFC 9000), v2 (RFC 9369); drafts 0xff0000xx


def _dns_query_cut(data: bytes) -> bool:
    """A DNS query header (one question, no answers) whose first label is
    printable up to the end of the sample, at least 16 bytes of it."""
    if len(data) < 12 + 1 + 16:
        return False
    _id, flags, qd, an, ns = struct.unpack("!HHHHH", data[:10])
    if flags & 0x8000 or (flags >> 11) & 0xF or not 1 <= qd <= 4 or an or ns:
        return False
    n = data[12]
    label = data[13 : 13 + n]
    return 16 <= n <= 63 and len(data) < 13 + n and all(32 < b < 127 for b in label)


def datagram_protocol(data: bytes, transport: int) -> str | None:
    """QUIC (long header), DTLS (record header) or WireGuard (message
    header) from a UDP socket's first datagram; None otherwise. Their
    payloads are encrypted: the name says which protocol, the port says
    whether it is where it belongs (SL-EXF-002). Also "dns" for a DNS query
    whose first label runs past the sample (64 bytes off port 53), which
    protocol_hint needs whole."""
    if transport != 17 or len(data) < 8:
        return None
    if _dns_query_cut(data):
        return "dns"
    b0 = data[0]
    if b0 & 0xC0 == 0xC0 and len(data) >= 7:
        (version,) = struct.unpack(">I", data[1:5])
        dcid = data[5]
        if (version in _QUIC_VERSIONS or version >> 8 == 0xFF0000) and dcid <= 20 and len(data) > 6 + dcid:
            if data[6 + dcid] <= 20:
                return QUIC
    # a socket's first DTLS record is a handshake in epoch 0
    if 20 <= b0 <= 25 and data[1] == 0xFE and data[2] in (0xFF, 0xFD) and len(data) >= 13 and data[3:5] == b"\0\0":
        return DTLS
    if 1 <= b0 <= 4 and data[1:4] == b"\x00\x00\x00":
        return WIREGUARD
    return None
