"""Number names 0-999 in English and French, for the number_names and translate_numbers examples.

French follows the traditional spelling (before the 1990 reform): hyphens join the words of
a number below 100 except around "et" ("vingt et un", "soixante et onze", "quatre-vingt-un"),
"cent" is separated by spaces ("deux cent trois"), "vingt" and "cent" take an "s" when they
are multiplied and end the number ("quatre-vingts", "deux cents", but "quatre-vingt-deux",
"deux cent un", "cent"). English is American, without "and" ("one hundred five").
"""

from __future__ import annotations

_FR_UNITS = (
    "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize"
).split()
_FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}
_EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _check(n: int) -> None:
    if not isinstance(n, int) or not 0 <= n <= 999:
        raise ValueError(f"n must be an integer in [0, 999], got {n!r}")


def _fr_below_100(n: int) -> str:
    if n <= 16:
        return _FR_UNITS[n]
    if n < 20:
        return "dix-" + _FR_UNITS[n - 10]
    t, u = divmod(n, 10)
    if t <= 6:
        base = _FR_TENS[t]
        return base if u == 0 else f"{base} et un" if u == 1 else f"{base}-{_FR_UNITS[u]}"
    if t == 7:
        return "soixante et onze" if u == 1 else "soixante-" + _fr_below_100(10 + u)
    if t == 8:
        return "quatre-vingts" if u == 0 else "quatre-vingt-" + _FR_UNITS[u]
    return "quatre-vingt-" + _fr_below_100(10 + u)  # t == 9


def french(n: int) -> str:
    """The French name of n in [0, 999], traditional spelling: french(97) ==
    "quatre-vingt-dix-sept", french(280) == "deux cent quatre-vingts"."""
    _check(n)
    h, r = divmod(n, 100)
    if h == 0:
        return _fr_below_100(r)
    head = "cent" if h == 1 else _FR_UNITS[h] + " cent" + ("s" if r == 0 else "")
    return head if r == 0 else f"{head} {_fr_below_100(r)}"


def english(n: int) -> str:
    """The English name of n in [0, 999]: english(97) == "ninety-seven",
    english(105) == "one hundred five"."""
    _check(n)
    h, r = divmod(n, 100)
    if r < 20:
        low = _EN_UNITS[r]
    else:
        t, u = divmod(r, 10)
        low = _EN_TENS[t] + ("" if u == 0 else "-" + _EN_UNITS[u])
    if h == 0:
        return low
    return f"{_EN_UNITS[h]} hundred" + ("" if r == 0 else " " + low)
