"""Caller-supplied regular expressions, matched in linear time with RE2 (the `google-re2` package).

Every parameter that takes a pattern (`body_match`, `body_not_match`, `expect`, `answer_match`, and a
plugin's `regex_param`) is compiled here. What text a pattern meets is each check's business, following
blackbox_exporter's conventions and stated in the parameter's doc (`/checks`): `body_match` and
`body_not_match` the whole body text, `expect` each line of the reply, `answer_match` each answer. A
text cut at a read limit (a body at `max_body_bytes`, a reply line at the tcp check's 64 KiB) is not the
whole text: there only a match ending before the cut counts (RE2's `endpos`, `_common.search`), and one
that reaches the cut is answered ``body_truncated`` / ``reply_truncated``, never a pass.

Never with Python's `re`: a backtracking engine lets one request such as ``(a+)+$`` against
``'a' * 30 + '!'`` hold a worker thread (and the GIL) for minutes, because `re` runs in C without
releasing the GIL or looking at signals, so no deadline can stop it. RE2 guarantees time linear in
the text and memory bounded by `MAX_PROGRAM_BYTES`, which is what blackbox_exporter relies on for the
same parameters (Go's regexp is RE2).

RE2's syntax is Perl's without backreferences and lookaround; a pattern RE2 cannot compile is refused
by the gateway with a 400 naming the parameter, before anything is published. Texts are bounded by the
callers (the capped body, the capped reply), so a match costs at most linear time in that cap.

Linear is not cheap, though. RE2 searches with a DFA while its states fit `MAX_PROGRAM_BYTES`; a pattern
whose DFA cannot (``.*a.{999}c`` needs 2**1000 states) falls back to the NFA, which costs per character
of text a constant plus the program's size: one C call, which no deadline can interrupt (it releases the
GIL, so only the check's own slot is held). Measured on the 2-core development VM (`process_time`,
256 KiB of random a/b text, load average ~20): ``[ab]*a[ab]{20}c`` (27 instructions) 240 ns a character,
``.*a.{200}c`` (1,614) 1.4 µs, ``(?s).*a.{999}c`` (7,006) 5.1 µs — about 220 ns + 0.7 ns x instructions,
while a DFA search (``database``, ``(?i)(error|fail|exception)``) costs well under 10 ns. So before a
search the checks ask `worst_case_seconds` (that NFA cost, with a factor of 2 for a busier machine) and
give up with ``reason: timeout`` when it exceeds the time their deadline leaves — instead of holding the
slot long past it (a 10 MiB body under such a pattern took 80 s). A search that is cheap in fact but not
in the worst case is refused only when the deadline is close; with the default 64 KiB body cap the worst
case of a 100-instruction pattern is 46 ms.
"""

from __future__ import annotations

import functools
import threading

import cachetools
import re2

# RE2's budget for one compiled program (its DFA cache included); a pattern needing more fails to compile.
# The gateway compiles every pattern on its event loop, so compiling must be cheap even when it fails:
# with RE2's default 8 MiB, `\pL{1000}` (nine characters) took 95-250 ms to be refused, and ten such
# requests a second froze the loop (the hostile-caller attack). With 128 KiB the worst pattern we found
# takes under 1 ms to compile or refuse (`[\p{L}\p{N}\p{P}]{200}`, `(\pL|\pN){50}`; best of 3 on the
# development VM), programs of up to ~7,000 instructions still compile (`(?s).{1000}`, `(?i)\w{900}`),
# and eight everyday patterns search 64 KiB in the same 3.2-3.8 ms as with 8 MiB (their DFAs are small).
MAX_PROGRAM_BYTES = 128 << 10
# The longest pattern a parameter accepts.
MAX_PATTERN_CHARS = 512
# Worst-case cost of a search, per character of text, when RE2's DFA gives up (see the module docstring).
NFA_NS_PER_CHAR = 250.0
NFA_NS_PER_CHAR_AND_INSTRUCTION = 1.0
NFA_SAFETY_FACTOR = 2.0


class PatternError(ValueError):
    """The text is not a pattern RE2 accepts; the message says why (meant for the caller)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    # Compilation errors are reported to the caller; RE2 must not also print them on the worker's stderr.
    options.log_errors = False
    return options


# Patterns RE2 refused, and why: a caller repeating one pays the compile once (lru_cache keeps no failures).
_REFUSED: cachetools.LRUCache[str, str] = cachetools.LRUCache(maxsize=1024)
_REFUSED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re2._Regexp:
    """`pattern` compiled by RE2 (cached: dashboards repeat the same patterns; refusals too).

    Raises `PatternError` when RE2 cannot compile it: unsupported syntax (backreferences, lookaround),
    a syntax error, or a program larger than `MAX_PROGRAM_BYTES` ("pattern too large").
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"longer than {MAX_PATTERN_CHARS} characters")
    with _REFUSED_LOCK:
        refused = _REFUSED.get(pattern)
    if refused is not None:
        raise PatternError(refused)
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        message = f"not a valid RE2 regular expression ({why})"
    except (TypeError, ValueError) as exc:  # e.g. a NUL character RE2's wrapper cannot pass on
        message = f"not a valid RE2 regular expression ({exc})"
    with _REFUSED_LOCK:
        _REFUSED[pattern] = message
    raise PatternError(message)


def worst_case_seconds(compiled: re2._Regexp, length: int) -> float:
    """Seconds a search of `compiled` over `length` characters may take at worst (RE2's NFA fallback)."""
    per_char = NFA_NS_PER_CHAR + NFA_NS_PER_CHAR_AND_INSTRUCTION * compiled.programsize
    return length * per_char * NFA_SAFETY_FACTOR / 1e9


def validate_pattern(pattern: str) -> None:
    """Param validator: a pattern RE2 compiles (ValueError with the reason otherwise)."""
    compile_pattern(pattern)
