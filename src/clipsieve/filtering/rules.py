"""Filter rules: quality threshold, moderation routing and ``--where`` expressions.

Every rule looks at one stored result dict (the JSON schema of
:meth:`clipsieve.types.ItemResult.to_dict`) and answers *pass*, *fail* or *unknown*:

* **moderation** — ``block`` fails (→ reject), ``review`` asks for review (→ the review
  folder, or reject when there is none), ``allow`` passes. A result without a ``moderation``
  field is *unknown* when moderation was asked for (``--policy``), and otherwise not judged.
* **minimum quality** — ``quality.score >= MIN`` passes; a result without ``quality.score``
  is *unknown*.
* **where** — a boolean expression over result fields (see :func:`parse_where`). A comparison
  on a field that a result lacks (or whose value has the wrong type) is *unknown*, and
  ``and`` / ``or`` / ``not`` follow three-valued (Kleene) logic, so ``a or b`` is true when
  ``a`` is true even if ``b`` is unknown.

An *unknown* never accepts: the item goes to review (or reject without a review folder) with a
reason such as ``unknown: labels.cat is missing``. A rule whose field is missing from **every**
result is a configuration mistake rather than a per-item fact; :func:`missing_everywhere`
finds those so the caller can stop with a clear error.

The ``--where`` language is parsed by a small hand-written recursive-descent parser into a
tree of plain objects; nothing is ever passed to ``eval``, so an expression can only read
fields and compare them::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | "exists" "(" field ")"
                | "issue" "(" name ")" | membership | comparison
    membership := operand "in" ("(" literal ("," literal)* ")" | field)
    comparison := operand ("<" | "<=" | ">" | ">=" | "==" | "=" | "!=") operand
    operand    := field | number | string | "true" | "false" | "null"
    field      := name ("." (name | string) | "[" string "]")*

Names are letters, digits, ``_`` and ``-`` (not starting with a digit or ``-``); quote a key
with spaces: ``labels."a cat" > 0.8`` or ``labels["a cat"] > 0.8``. When a field holds an
object with a ``score`` key (as some heads report categories), comparisons use that score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clipsieve.errors import ConfigError

#: Decisions a filter can take for one item.
DECISIONS: tuple[str, ...] = ("accept", "review", "reject", "error")

#: Longest accepted ``--where`` expression, and deepest nesting.
MAX_WHERE_LENGTH = 4000
MAX_WHERE_DEPTH = 64

_MISSING = object()


class WhereError(ConfigError):
    """A ``--where`` expression does not parse."""

    code = "where_error"


# -- the expression tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A dotted reference into a result dict, e.g. ``labels.cat``."""

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join(p if re.fullmatch(r"[A-Za-z_][\w-]*", p) else f'"{p}"' for p in self.parts)

    def get(self, result: Mapping[str, Any]) -> Any:
        """The value in ``result`` or the private missing sentinel."""
        cur: Any = result
        for p in self.parts:
            if isinstance(cur, Mapping) and p in cur:
                cur = cur[p]
            else:
                return _MISSING
        return cur


@dataclass(frozen=True)
class Literal:
    value: Any


Operand = Field | Literal


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True)
class Exists:
    field: Field


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class Issue:
    """``issue('blurry')``: the named image issue is in ``quality.issues``."""

    name: str


@dataclass(frozen=True)
class In:
    """``FIELD in (v1, v2, …)`` (value membership) or ``'x' in FIELD`` (a list holds it)."""

    left: Operand
    right: Operand | tuple[Any, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


Node = Compare | Exists | Not | BoolOp | Issue | In

_ISSUES_FIELD = ("quality", "issues")


@dataclass
class Truth:
    """A three-valued outcome with the reasons behind it.

    Attributes:
        value: ``True``, ``False`` or ``None`` (unknown).
        why: human-readable facts, e.g. ``labels.cat = 0.31`` or ``labels.cat is missing``.
    """

    value: bool | None
    why: list[str] = field(default_factory=list)


# -- tokenizer ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<punct>[().\[\],])
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][\w-]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null", "exists", "issue", "in"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _error(text, pos, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tok = m.group()
            if kind == "name" and tok.lower() in _KEYWORDS:
                kind, tok = "kw", tok.lower()
            toks.append(_Tok(kind, tok, pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


def _error(text: str, pos: int, msg: str) -> WhereError:
    return WhereError(f"--where: {msg} at position {pos + 1}:\n  {text}\n  {' ' * pos}^")


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str, text: str | None = None) -> _Tok | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, text: str | None, what: str) -> _Tok:
        t = self.take(kind, text)
        if t is None:
            raise self.fail(f"expected {what}")
        return t

    def fail(self, msg: str) -> WhereError:
        t = self.tok
        found = "end of expression" if t.kind == "end" else repr(t.text)
        return _error(self.text, t.pos, f"{msg}, found {found}")

    def parse(self) -> Node:
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.fail("expected 'and', 'or' or the end")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.take("kw", "or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.take("kw", "and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_WHERE_DEPTH:
            raise self.fail("expression nested too deeply")
        try:
            if self.take("kw", "not"):
                return Not(self.not_expr())
            if self.take("punct", "("):
                node = self.or_expr()
                self.expect("punct", ")", "')'")
                return node
            if self.take("kw", "exists"):
                self.expect("punct", "(", "'(' after exists")
                f = self.field()
                self.expect("punct", ")", "')'")
                return Exists(f)
            if self.take("kw", "issue"):
                self.expect("punct", "(", "'(' after issue")
                t = self.take("str") or self.take("name")
                if t is None:
                    raise self.fail("expected an issue name, e.g. issue('blurry')")
                name = _unquote(t.text) if t.kind == "str" else t.text
                from clipsieve.quality.issues import ISSUE_NAMES

                if name not in ISSUE_NAMES:
                    from clipsieve.errors import did_you_mean

                    raise _error(
                        self.text, t.pos, f"unknown issue {name!r}{did_you_mean(name, ISSUE_NAMES)}"
                        f" (issues: {', '.join(ISSUE_NAMES)})",
                    )
                if name == "near_duplicate":
                    raise _error(
                        self.text, t.pos, "near_duplicate is found across files by --dedupe, "
                        "not stored per file: use --dedupe COSINE",
                    )
                self.expect("punct", ")", "')'")
                return Issue(name)
            left = self.operand()
            if self.take("kw", "in"):
                if self.take("punct", "("):
                    values = [self.literal()]
                    while self.take("punct", ","):
                        values.append(self.literal())
                    self.expect("punct", ")", "')' or ','")
                    return In(left, tuple(values))
                right = self.operand()
                if not isinstance(right, Field):
                    raise self.fail("expected a field or a (list, of, values) after 'in'")
                return In(left, right)
            op = self.take("op")
            if op is None:
                raise self.fail("expected a comparison operator (<, <=, >, >=, ==, !=)")
            right = self.operand()
            if isinstance(left, Literal) and isinstance(right, Literal):
                raise _error(self.text, op.pos, "a comparison needs at least one field")
            return Compare(left, "==" if op.text == "=" else op.text, right)
        finally:
            self.depth -= 1

    def operand(self) -> Operand:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            value = float(t.text)
            return Literal(
                int(value)
                if value.is_integer() and "." not in t.text and "e" not in t.text.lower()
                else value
            )
        if t.kind == "str":
            self.i += 1
            return Literal(_unquote(t.text))
        if t.kind == "kw" and t.text in ("true", "false", "null"):
            self.i += 1
            return Literal({"true": True, "false": False, "null": None}[t.text])
        if t.kind == "name":
            return self.field()
        raise self.fail("expected a field name, a number or a quoted string")

    def literal(self) -> Any:
        op = self.operand()
        if not isinstance(op, Literal):
            raise self.fail("expected a number, a quoted string, true, false or null")
        return op.value

    def field(self) -> Field:
        t = self.take("name")
        if t is None:
            raise self.fail("expected a field name")
        parts = [t.text]
        while True:
            if self.take("punct", "."):
                nxt = self.take("name") or self.take("kw") or self.take("str")
                if nxt is None:
                    raise self.fail("expected a name or a quoted key after '.'")
                parts.append(_unquote(nxt.text) if nxt.kind == "str" else nxt.text)
            elif self.take("punct", "["):
                s = self.expect("str", None, "a quoted key inside [ ]")
                self.expect("punct", "]", "']'")
                parts.append(_unquote(s.text))
            else:
                break
        return Field(tuple(parts))


# -- public parser / evaluator ----------------------------------------------------------------


class WhereExpr:
    """A parsed ``--where`` expression.

    Args:
        text: the expression, e.g. ``"labels.cat > 0.8 and quality.aesthetic >= 5"``.

    Raises:
        WhereError: the text does not parse (the message points at the position).

    Example:
        >>> w = WhereExpr("labels.cat > 0.8 or not exists(labels)")
        >>> w.evaluate({"labels": {"cat": 0.9}}).value
        True
    """

    def __init__(self, text: str) -> None:
        if not text or not text.strip():
            raise WhereError("--where: empty expression")
        if len(text) > MAX_WHERE_LENGTH:
            raise WhereError(f"--where: expression longer than {MAX_WHERE_LENGTH} characters")
        self.text = text.strip()
        self.tree: Node = _Parser(self.text).parse()

    def __repr__(self) -> str:
        return f"WhereExpr({self.text!r})"

    def fields(self, *, compared_only: bool = False) -> list[Field]:
        """Every field the expression reads, in order of first appearance.

        Args:
            compared_only: leave out fields used only inside ``exists(...)``.
        """
        out: dict[tuple[str, ...], Field] = {}

        def walk(n: Node) -> None:
            if isinstance(n, Compare):
                for side in (n.left, n.right):
                    if isinstance(side, Field):
                        out.setdefault(side.parts, side)
            elif isinstance(n, Exists):
                if not compared_only:
                    out.setdefault(n.field.parts, n.field)
            elif isinstance(n, Issue):
                out.setdefault(_ISSUES_FIELD, Field(_ISSUES_FIELD))
            elif isinstance(n, In):
                for operand in (n.left, n.right):
                    if isinstance(operand, Field):
                        out.setdefault(operand.parts, operand)
            elif isinstance(n, Not):
                walk(n.inner)
            else:
                for it in n.items:
                    walk(it)

        walk(self.tree)
        return list(out.values())

    def evaluate(self, result: Mapping[str, Any]) -> Truth:
        """Evaluate on one result dict; never raises for missing or odd-typed fields."""
        return _evaluate(self.tree, result)


def parse_where(text: str | Iterable[str]) -> WhereExpr:
    """Parse one expression, or several joined with ``and`` (repeated ``--where`` options).

    Raises:
        WhereError: an expression does not parse.
    """
    if isinstance(text, str):
        return WhereExpr(text)
    parts = [t for t in text if t and t.strip()]
    if not parts:
        raise WhereError("--where: empty expression")
    for p in parts:
        WhereExpr(p)  # each one on its own, for error positions that match what was typed
    return WhereExpr(" and ".join(f"({p})" for p in parts))


def _resolve(op: Operand, result: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(value, label) for an operand; value is _MISSING for a missing field."""
    if isinstance(op, Literal):
        return op.value, None
    value = op.get(result)
    if isinstance(value, Mapping) and isinstance(value.get("score"), (int, float)):
        value = value["score"]
    return value, op.name


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return repr(v)
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _is_num(v: Any) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and not (isinstance(v, float) and math.isnan(v))
    )


def _evaluate(node: Node, result: Mapping[str, Any]) -> Truth:
    if isinstance(node, BoolOp):
        parts = [_evaluate(n, result) for n in node.items]
        values = [p.value for p in parts]
        if node.op == "and":
            if False in values:
                return Truth(False, [w for p in parts if p.value is False for w in p.why])
            if None in values:
                return Truth(None, [w for p in parts if p.value is None for w in p.why])
            return Truth(True, [w for p in parts for w in p.why])
        if True in values:
            return Truth(True, [w for p in parts if p.value is True for w in p.why])
        if None in values:
            return Truth(None, [w for p in parts if p.value is None for w in p.why])
        return Truth(False, [w for p in parts for w in p.why])
    if isinstance(node, Not):
        inner = _evaluate(node.inner, result)
        return Truth(None if inner.value is None else not inner.value, inner.why)
    if isinstance(node, Issue):
        issues = Field(_ISSUES_FIELD).get(result)
        if not isinstance(issues, list):
            return Truth(None, ["quality.issues is missing"])
        names = [str(it.get("name")) if isinstance(it, Mapping) else str(it) for it in issues]
        if node.name in names:
            it = issues[names.index(node.name)]
            detail = ""
            if isinstance(it, Mapping) and it.get("component"):
                detail = f" ({it['component']} {_fmt(it.get('value'))})"
            return Truth(True, [f"issue {node.name}{detail}"])
        return Truth(False, [f"no issue {node.name}"])
    if isinstance(node, In):
        return _evaluate_in(node, result)
    if isinstance(node, Exists):
        v = node.field.get(result)
        present = v is not _MISSING and v is not None
        return Truth(present, [f"{node.field.name} {'exists' if present else 'is missing'}"])
    lv, lname = _resolve(node.left, result)
    rv, rname = _resolve(node.right, result)
    op = node.op
    text = f"{lname or _fmt(lv)} {op} {rname or _fmt(rv)}"
    # null comparisons treat a missing field and a null value alike
    if (
        isinstance(node.left, Literal)
        and lv is None
        or isinstance(node.right, Literal)
        and rv is None
    ):
        other, name = (rv, rname) if isinstance(node.left, Literal) and lv is None else (lv, lname)
        is_null = other is _MISSING or other is None
        val = is_null if op == "==" else (not is_null if op == "!=" else None)
        if val is None:
            return Truth(None, [f"cannot order null in {text}"])
        return Truth(val, [f"{name} {'is null' if is_null else '= ' + _fmt(other)}"])
    for v, name in ((lv, lname), (rv, rname)):
        if v is _MISSING or v is None:
            return Truth(None, [f"{name} is missing"])
        if isinstance(v, (Mapping, list)):
            return Truth(None, [f"{name} is {'an object' if isinstance(v, Mapping) else 'a list'}"])
    facts = [f"{n} = {_fmt(v)}" for v, n in ((lv, lname), (rv, rname)) if n]
    if op in ("==", "!="):
        if _is_num(lv) and _is_num(rv):
            eq = float(lv) == float(rv)
        elif type(lv) is type(rv):
            eq = lv == rv
        else:
            return Truth(None, [f"cannot compare {_kind(lv)} with {_kind(rv)} in {text}"])
        return Truth(eq if op == "==" else not eq, facts)
    if _is_num(lv) and _is_num(rv):
        a, b = float(lv), float(rv)
    elif isinstance(lv, str) and isinstance(rv, str):
        a, b = lv, rv  # type: ignore[assignment]
    else:
        return Truth(None, [f"cannot compare {_kind(lv)} with {_kind(rv)} in {text}"])
    ok = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    return Truth(ok, facts)


def _same(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _evaluate_in(node: In, result: Mapping[str, Any]) -> Truth:
    lv, lname = _resolve(node.left, result)
    if isinstance(node.right, tuple):
        shown = "(" + ", ".join(_fmt(v) for v in node.right) + ")"
        if lv is _MISSING or lv is None:
            return Truth(None, [f"{lname} is missing"])
        ok = any(_same(lv, v) for v in node.right)
        return Truth(ok, [f"{lname or _fmt(lv)} {'in' if ok else 'not in'} {shown}"])
    rv = node.right.get(result) if isinstance(node.right, Field) else _MISSING
    rname = node.right.name if isinstance(node.right, Field) else "?"
    if rv is _MISSING or rv is None:
        return Truth(None, [f"{rname} is missing"])
    if lv is _MISSING or lv is None:
        return Truth(None, [f"{lname} is missing"])
    if isinstance(rv, Mapping):
        ok = str(lv) in rv
    elif isinstance(rv, list):
        ok = any(_same(lv, v) for v in rv)
    elif isinstance(rv, str) and isinstance(lv, str):
        ok = lv in rv
    else:
        return Truth(None, [f"{rname} is not a list"])
    return Truth(ok, [f"{lname or _fmt(lv)} {'in' if ok else 'not in'} {rname}"])


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if _is_num(v):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return type(v).__name__


# -- the rule set ---------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the rules say about one result.

    Attributes:
        decision: ``accept``, ``review``, ``reject`` or ``error``.
        reasons: why; for ``accept`` the checks that passed.
    """

    decision: str
    reasons: list[str]


@dataclass
class Rules:
    """The rules of one filter run.

    Args:
        min_quality: minimum ``quality.score`` (0–10), or ``None``.
        where: a parsed ``--where`` expression, or ``None``.
        require_moderation: treat a result without ``moderation`` as unknown (set when a
            policy was asked for); otherwise such a result is not judged on moderation.
        review: whether there is a review destination; without one, items that need review
            are rejected (their reasons say so).
        prefer_human: a person's decision (the result's ``human`` field, from
            ``clipsieve review import``) replaces the model's moderation decision.

    Example:
        >>> rules = Rules(min_quality=6.5, where=parse_where("labels.cat > 0.8"))
        >>> rules.decide({"status": "ok", "quality": {"score": 7.0}, "labels": {"cat": 0.9}})
        Verdict(decision='accept', reasons=['quality 7.00 >= 6.5', 'where: labels.cat = 0.9'])
    """

    min_quality: float | None = None
    where: WhereExpr | None = None
    require_moderation: bool = False
    review: bool = True
    prefer_human: bool = False

    def fields(self) -> list[Field]:
        """Fields the rules need, for :func:`missing_everywhere`."""
        out: list[Field] = []
        if self.require_moderation:
            out.append(Field(("moderation", "decision")))
        if self.min_quality is not None:
            out.append(Field(("quality", "score")))
        if self.where is not None:
            out.extend(self.where.fields(compared_only=True))
        return out

    def decide(self, result: Mapping[str, Any]) -> Verdict:
        """Route one result dict to accept / review / reject (or error when it failed)."""
        if result.get("status", "ok") != "ok":
            err = result.get("error") or {}
            msg = err.get("message") or "unknown error"
            code = err.get("code")
            return Verdict("error", [f"scan failed: {code + ': ' if code else ''}{msg}"])
        fails: list[str] = []
        reviews: list[str] = []
        passes: list[str] = []

        result = judged(result)
        mod = result.get("moderation")
        human = result.get("human") if self.prefer_human else None
        if isinstance(human, Mapping) and human.get("decision") in ("allow", "review", "block"):
            dec = str(human["decision"])
            who = f" by {human['reviewer']}" if human.get("reviewer") else ""
            note = f": {human['note']}" if human.get("note") else ""
            model = (
                f", model said {mod.get('decision')}"
                if isinstance(mod, Mapping) and mod.get("decision") not in (None, dec)
                else ""
            )
            text = f"human: {dec}{who}{note}{model}"
            {"block": fails, "review": reviews, "allow": passes}[dec].append(text)
        elif isinstance(mod, Mapping) and mod.get("decision") is not None:
            dec = str(mod.get("decision"))
            detail = _moderation_detail(mod)
            if dec == "block":
                fails.append(f"moderation: block{detail}")
            elif dec == "review":
                reviews.append(f"moderation: review{detail}")
            elif dec == "allow":
                passes.append("moderation: allow")
            else:
                reviews.append(f"unknown: moderation decision {dec!r}")
        elif self.require_moderation:
            reviews.append("unknown: moderation is missing")

        if self.min_quality is not None:
            q = result.get("quality")
            score = q.get("score") if isinstance(q, Mapping) else None
            if not _is_num(score):
                reviews.append("unknown: quality.score is missing")
            elif float(score) < self.min_quality:  # type: ignore[arg-type]
                fails.append(f"quality {float(score):.2f} < {self.min_quality:g}")  # type: ignore[arg-type]
            else:
                passes.append(f"quality {float(score):.2f} >= {self.min_quality:g}")  # type: ignore[arg-type]

        if self.where is not None:
            t = self.where.evaluate(result)
            why = ", ".join(dict.fromkeys(t.why))
            if t.value is False:
                fails.append(f"where false: {why}" if why else "where false")
            elif t.value is None:
                reviews.append(f"unknown: {why}" if why else "unknown: where")
            else:
                passes.append(f"where: {why}" if why else "where: true")

        if fails:
            return Verdict("reject", fails + reviews)
        if reviews:
            if self.review:
                return Verdict("review", reviews)
            return Verdict("reject", reviews + ["needs review but there is no review folder"])
        return Verdict("accept", passes)


def _moderation_detail(mod: Mapping[str, Any]) -> str:
    reasons = mod.get("reasons")
    if isinstance(reasons, list) and reasons:
        return " (" + "; ".join(str(r) for r in reasons[:5]) + ")"
    cats = mod.get("categories")
    if isinstance(cats, Mapping) and cats:

        def score(v: Any) -> float:
            if isinstance(v, Mapping):
                v = v.get("score")
            return float(v) if _is_num(v) else float("-inf")

        name, value = max(cats.items(), key=lambda kv: score(kv[1]))
        if score(value) > float("-inf"):
            return f" ({name} {score(value):.2f})"
    return ""


def judged(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The result as the rules see it: a video (``kind: "video"``) is moderated by its
    verdict, so its ``moderation`` is ``{decision, reasons}`` from ``verdict``."""
    verdict = result.get("verdict")
    if result.get("kind") != "video" or not isinstance(verdict, Mapping):
        return result
    reasons = [f"video verdict: {verdict['reason']}"] if verdict.get("category") else []
    return {**result, "moderation": {"decision": verdict.get("decision"), "reasons": reasons}}


def missing_everywhere(rules: Rules, results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the fields the rules need that no successful result has.

    Returns an empty list when there is no successful result at all (nothing to judge).
    """
    needed = rules.fields()
    if not needed:
        return []
    seen: set[tuple[str, ...]] = set()
    any_ok = False
    for r in results:
        if r.get("status", "ok") != "ok":
            continue
        r = judged(r)
        any_ok = True
        for f in needed:
            if f.parts not in seen:
                v = f.get(r)
                if v is not _MISSING and v is not None:
                    seen.add(f.parts)
        if len(seen) == len({f.parts for f in needed}):
            return []
    if not any_ok:
        return []
    return list(dict.fromkeys(f.name for f in needed if f.parts not in seen))
