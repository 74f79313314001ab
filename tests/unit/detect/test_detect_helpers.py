"""Pure helpers of the rules: which processes are encryption tools, and how
DNS query names are split and judged."""

from __future__ import annotations

import base64
import hashlib
import math

import pytest

from sensor.detect.rules.exf003_cleartext_carrier import char_entropy, encoding_of, registered_domain
from sensor.detect.rules.exf006_encrypt_then_egress import encryption_tool
from sensor.detect.view import ProcessRef


def p(executable: str | None, args: list[str] | None, name: str | None = None) -> ProcessRef:
    return ProcessRef(1, name or (executable or "x").rsplit("/", 1)[-1], executable, args)


@pytest.mark.parametrize(
    "exe,args,expected",
    [
        # openssl: enc and the cipher shorthand encrypt; s_client, rand, dgst do not
        ("/usr/bin/openssl", ["openssl", "enc", "-aes-256-cbc", "-in", "f"], ("openssl enc", True)),
        ("/usr/bin/openssl", ["openssl", "aes-256-cbc", "-salt", "-in", "f"], ("openssl aes-256-cbc", True)),
        ("/usr/bin/openssl", ["openssl", "chacha20", "-in", "f"], ("openssl chacha20", True)),
        ("/usr/bin/openssl", ["openssl", "des3", "-in", "f"], ("openssl des3", True)),
        ("/usr/bin/openssl", ["openssl", "smime", "-encrypt", "-in", "f", "cert.pem"], ("openssl smime", True)),
        ("/usr/bin/openssl", ["openssl", "cms", "-encrypt", "-in", "f"], ("openssl cms", True)),
        ("/usr/bin/openssl", ["openssl", "cms", "-sign", "-in", "f"], None),
        ("/usr/bin/openssl", ["openssl", "s_client", "-connect", "example.com:443"], None),
        ("/usr/bin/openssl", ["openssl", "rand", "-hex", "16"], None),
        ("/usr/bin/openssl", ["openssl", "dgst", "-sha256", "f"], None),
        ("/usr/bin/openssl", ["openssl", "req", "-new"], None),
        ("/usr/bin/openssl", ["openssl"], None),
        # gpg: symmetric / encrypt, also clustered short options; decrypt and verify are not
        ("/usr/bin/gpg", ["gpg", "-c", "f"], ("gpg", True)),
        ("/usr/bin/gpg", ["gpg", "--symmetric", "--batch", "f"], ("gpg", True)),
        ("/usr/bin/gpg", ["gpg", "--encrypt", "-r", "bob", "f"], ("gpg", True)),
        ("/usr/bin/gpg", ["gpg", "-ac", "f"], ("gpg", True)),
        ("/usr/bin/gpg", ["gpg", "-se", "-r", "bob", "f"], ("gpg", True)),
        ("/usr/bin/gpg2", ["gpg2", "-e", "f"], ("gpg2", True)),
        ("/usr/bin/gpg", ["gpg", "--decrypt", "f.gpg"], None),
        ("/usr/bin/gpg", ["gpg", "-d", "f.gpg"], None),
        ("/usr/bin/gpg", ["gpg", "--verify", "f.sig"], None),
        ("/usr/bin/gpg", ["gpg", "--list-keys"], None),
        # zip with a password
        ("/usr/bin/zip", ["zip", "-e", "out.zip", "f"], ("zip", True)),
        ("/usr/bin/zip", ["zip", "--encrypt", "out.zip", "f"], ("zip", True)),
        ("/usr/bin/zip", ["zip", "-P", "secret", "out.zip", "f"], ("zip", True)),
        ("/usr/bin/zip", ["zip", "--password", "secret", "out.zip", "f"], ("zip", True)),
        ("/usr/bin/zip", ["zip", "-r", "out.zip", "dir"], None),
        ("/usr/bin/zip", ["zip", "-re", "out.zip", "dir"], ("zip", True)),  # clustered: -r -e
        # 7z add with a password; extraction is not
        ("/usr/bin/7z", ["7z", "a", "-psecret", "out.7z", "f"], ("7z", True)),
        ("/usr/bin/7za", ["7za", "a", "-mhe=on", "-pS3cret", "out.7z", "f"], ("7za", True)),
        ("/usr/bin/7z", ["7z", "a", "out.7z", "f"], None),
        ("/usr/bin/7z", ["7z", "x", "-psecret", "out.7z"], None),
        # tools that only encrypt (or decrypt: still an encryption tool)
        ("/usr/bin/age", ["age", "-p", "-o", "f.age", "f"], ("age", True)),
        ("/usr/bin/age", None, ("age", True)),
        ("/usr/bin/ccrypt", ["ccrypt", "f"], ("ccrypt", True)),
        ("/usr/bin/ccencrypt", ["ccencrypt", "f"], ("ccencrypt", True)),
        # arguments unknown: the binary alone matched
        ("/usr/bin/openssl", None, ("openssl", False)),
        ("/usr/bin/gpg", None, ("gpg", False)),
        ("/usr/bin/zip", None, ("zip", False)),
        ("/usr/bin/7z", None, ("7z", False)),
        # not encryption tools at all
        ("/usr/bin/curl", ["curl", "-d", "@f", "https://x"], None),
        ("/usr/bin/tar", ["tar", "czf", "x.tgz", "dir"], None),
        ("/bin/sh", None, None),
    ],
)
def test_encryption_tool(exe: str, args: list[str] | None, expected) -> None:
    assert encryption_tool(p(exe, args)) == expected


def test_encryption_tool_by_name_when_executable_unknown() -> None:
    assert encryption_tool(p(None, ["openssl", "enc", "-e"], name="openssl")) == ("openssl enc", True)
    assert encryption_tool(p(None, None, name="gpg")) == ("gpg", False)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("a.b.example.com", ("example.com", "a.b")),
        ("example.com", ("example.com", "")),
        ("Example.COM.", ("example.com", "")),
        ("x.example.co.uk", ("example.co.uk", "x")),
        ("a.b.example.co.uk", ("example.co.uk", "a.b")),
        ("example.co.uk", ("example.co.uk", "")),
        ("data.files.example.com.au", ("example.com.au", "data.files")),
        ("deep.sub.example.org", ("example.org", "deep.sub")),
        ("x.y.example.io", ("example.io", "x.y")),  # two-letter TLD, ordinary second level
        ("localhost", ("localhost", "")),
    ],
)
def test_registered_domain(name: str, expected: tuple[str, str]) -> None:
    assert registered_domain(name) == expected


def test_char_entropy() -> None:
    assert char_entropy("") == 0.0
    assert char_entropy("aaaa") == 0.0
    assert char_entropy("ab") == pytest.approx(1.0)
    assert char_entropy("abcd") == pytest.approx(2.0)
    assert char_entropy("0123456789abcdef") == pytest.approx(4.0)
    s = "aab"
    assert char_entropy(s) == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))


HEX = hashlib.sha256(b"secret").hexdigest()[:40]
B32 = base64.b32encode(hashlib.sha256(b"secret").digest()).decode().rstrip("=").lower()
B64 = base64.urlsafe_b64encode(hashlib.sha256(b"secret!").digest()).decode().rstrip("=")


def test_fixtures_are_what_they_claim() -> None:
    assert any(c.isdigit() for c in HEX) and any(c.isalpha() for c in HEX)
    assert len(B32) == 52 and set(B32) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert any(c.isupper() for c in B64) and any(c.islower() for c in B64)
    assert any(c in "0189-_" for c in B64)  # not mistakable for base32


@pytest.mark.parametrize(
    "sub,expected",
    [
        (HEX, "hex"),
        (HEX[:20] + "." + HEX[20:], "hex"),  # dots removed before judging
        (HEX.upper(), "hex"),
        (B32, "base32"),
        (B32[:30] + "." + B32[30:], "base32"),
        (B64, "base64"),
        ("mail", None),
        ("www", None),
        ("api-v2", None),
        ("static-assets-eu-west-1-prod", None),
        ("deadbeefdeadbeefdeadbeefdeadbeef", None),  # hex letters only, no digit
        ("12345678901234567890123456", None),  # digits only
    ],
)
def test_encoding_of(sub: str, expected: str | None) -> None:
    assert encoding_of(sub, 24) == expected


@pytest.mark.parametrize("sub", ["mail", "www", "api-v2", "smtp", "cdn", "login"])
def test_ordinary_names_are_not_encoded_at_any_length(sub: str) -> None:
    assert encoding_of(sub, 1) is None


def test_encoding_of_respects_min_length() -> None:
    assert encoding_of(HEX[:23], 24) is None
    assert encoding_of(HEX[:24], 24) == "hex"
