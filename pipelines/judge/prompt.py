"""Judge prompts: template files in, one strict verdict format out.

Templates are plain text rendered with `str.format_map`: the fields are `{prompt}`, `{first}` (shown as A) and
`{second}` (shown as B); a literal brace is written `{{` or `}}`. format_map never re-reads the substituted
values, so braces inside a post or a completion are safe. A template is checked when it is loaded: exactly these
three fields, each at least once, and nothing else, so a typo fails before any call is paid for.

Every template ends by asking for a one-sentence comparison and then a final line `Preferred: A` or
`Preferred: B`. `parse_verdict` accepts that line and nothing looser: an answer it cannot read is invalid and is
counted as such, never turned into a guess (one public reproduction picked a random label; see paper-facts.md).
"""
from __future__ import annotations

import re
import string
from pathlib import Path

from pipelines.infra.io import UserError

TEMPLATE_DIR = Path(__file__).parent / "templates"
FIELDS = frozenset({"prompt", "first", "second"})

# The verdict line, exactly: the prefix, one space, one capital letter. The local judge scores the letters as
# continuations of VERDICT_PREFIX, so the prefix is shared with it.
VERDICT_PREFIX = "Preferred:"
_VERDICT_LINE = re.compile(r"Preferred: (A|B)")
# A line that starts a verdict, however malformed ("**Preferred:** B", "preferred : A"): used to refuse answers
# that give more than one. "A is preferred: ..." inside the comparison sentence is not a verdict line.
_VERDICT_START = re.compile(r"\W*preferred\W*:", re.IGNORECASE)


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))


def load_template(name_or_path: str | Path) -> str:
    """Text of a built-in template (`sentiment`, `summarization_c`, ...) or of a template file of your own.

    A bare name that matches a built-in wins; anything else is a path (absolute, or relative to the working
    directory). The text is validated before it is returned.
    """
    name = str(name_or_path)
    builtin = TEMPLATE_DIR / (name if name.endswith(".txt") else f"{name}.txt")
    path = builtin if ("/" not in name and builtin.is_file()) else Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"judge template '{name}' is neither a built-in ({', '.join(builtin_templates())}) "
                        f"nor an existing file")
    text = path.read_text(encoding="utf-8")
    check_template(text, source=str(path))
    return text


def check_template(text: str, source: str = "template") -> None:
    """Refuse a template whose fields are not exactly {prompt}, {first}, {second}."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:  # an unmatched single brace
        raise UserError(f"{source}: {err} (write a literal brace as '{{{{' or '}}}}')") from None
    used = {field for _, field, spec, conv in parsed if field is not None}
    odd = [f for _, f, spec, conv in parsed if f is not None and (f not in FIELDS or spec or conv)]
    if odd or used != FIELDS:
        raise UserError(f"{source}: a judge template uses exactly the fields {{prompt}}, {{first}}, {{second}} "
                        f"(found {sorted(used)}; not allowed: {sorted(set(odd))})")


def render(template: str, prompt: str, first: str, second: str) -> str:
    """The prompt the judge reads: `first` is shown as A, `second` as B."""
    return template.format_map({"prompt": prompt, "first": first, "second": second})


def verdict_line(letter: str) -> str:
    """The one line a well-formed answer ends with."""
    if letter not in ("A", "B"):
        raise ValueError(f"verdict letter must be 'A' or 'B', got {letter!r}")
    return f"{VERDICT_PREFIX} {letter}"


def parse_verdict(answer: str | None) -> str | None:
    """'A' or 'B' when the answer's last non-empty line is exactly `Preferred: A` / `Preferred: B` and no other line
    tries to give a verdict; None (invalid) otherwise.

    Surrounding whitespace on a line is ignored; case, punctuation, markdown, extra words and a second verdict
    are not: "Preferred: a", "Preferred: A.", "**Preferred: A**", "Preferred: A or B" and an answer with two
    `Preferred:` lines are all invalid.
    """
    if not answer:
        return None
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    if not lines:
        return None
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if match is None or any(_VERDICT_START.match(line) for line in lines[:-1]):
        return None
    return match.group(1)
