"""The openssl command line as a real EST client's toolbox (keys, CSRs, PKCS#7)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


def run(*args: str, input: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def new_csr(folder: Path, name: str, *, subject: str = "/CN=device-1", key: Path | None = None,
            key_type: str = "rsa", san: str | None = None) -> tuple[Path, Path]:
    """A key (new unless given) and a base64 DER CSR file, as `openssl req` makes them."""
    key_path = key or folder / f"{name}.key"
    args = ["req", "-new", "-subj", subject, "-outform", "DER"]
    if key is None:
        if key_type == "rsa":
            args += ["-newkey", "rsa:2048"]
        else:
            args += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        args += ["-nodes", "-keyout", str(key_path)]
    else:
        args += ["-key", str(key)]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    der = run(*args)
    csr = folder / f"{name}.b64"
    csr.write_bytes(base64.encodebytes(der))      # 76 columns, LF: what `| base64` gives
    return key_path, csr


def certs_from_pkcs7_b64(body: bytes, out: Path) -> str:
    """Decode an EST certs-only response to PEM at ``out``; return `openssl x509 -text`."""
    der = base64.b64decode(body)
    pem = run("pkcs7", "-inform", "DER", "-print_certs", input=der)
    out.write_bytes(pem)
    return run("x509", "-in", str(out), "-noout", "-text", "-serial").decode()


def serial_of(pem: Path) -> str:
    return run("x509", "-in", str(pem), "-noout", "-serial").decode().strip().split("=", 1)[1]
