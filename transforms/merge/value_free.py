"""``value_free``: the merge's DoFns fail without their error's text (Arrow's may quote an identity value)."""

from __future__ import annotations

import contextlib

__all__ = ["value_free"]


@contextlib.contextmanager
def value_free(step: str, passing: tuple[type[Exception], ...] = ()):
    """Errors leave these DoFns without their text (Arrow's may quote a value): type only.
    Keyset and vault errors are value-free by design and pass as they are, as do the caller's ``passing``."""
    from transforms.crypto.keyset import KeysetError
    from transforms.crypto.vault import VaultError

    try:
        yield
    except (KeysetError, VaultError, *passing):
        raise
    except Exception as exc:
        raise RuntimeError(
            f"{step} failed ({type(exc).__name__}; its text is withheld: it may quote identity values)"
        ) from None
