"""sha256 and blake2b as CPython builds them in: `import hashlib` loads OpenSSL's libcrypto (3.5 MB
resident in every command) for hashes these modules give bit for bit (the stdlib's `random` does the same)."""

try:
    from _sha256 import sha256  # CPython <= 3.11
except ImportError:  # pragma: no cover - CPython >= 3.12 renamed it, other interpreters may lack both
    try:
        from _sha2 import sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha256  # type: ignore[no-redef]

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b  # type: ignore[no-redef]

__all__ = ["blake2b", "sha256"]
