"""MediaWiki title normalisation, applied before a title is requested, cached or hashed.

`List_of_X`, `list of  X` and `List of X` are one page to MediaWiki; they must be one request,
one cache entry and one stage identity to us too. Only the rules that every wiki applies are
modelled: underscores are spaces, whitespace runs collapse, the first letter of the page name
is upper case, and a namespace prefix is written in its canonical spelling.
"""

from __future__ import annotations

# Canonical namespace names (and aliases) whose titles we build or compare ourselves.
_NAMESPACES = {"category": "Category", "file": "File", "image": "File"}


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def normalise_title(title: str) -> str:
    """A title as MediaWiki stores it: `category:living_people` -> `Category:Living people`."""
    t = " ".join(title.replace("_", " ").split())
    if ":" in t:
        ns, rest = t.split(":", 1)
        canonical = _NAMESPACES.get(ns.strip().lower())
        if canonical is not None:
            return f"{canonical}:{_upper_first(rest.strip())}"
    return _upper_first(t)


def category_title(name: str) -> str:
    """`Living people`, `category:Living_people` -> `Category:Living people`."""
    t = normalise_title(name)
    return t if t.startswith("Category:") else normalise_title(f"Category:{t}")
