"""Reading a cjsl job spec (OpenCue's XML job description) safely and strictly.

Cuebot reads specs with a *validating* parser: the document must name one of
its bundled DTDs (``http://localhost:8080/spcue/dtd/cjsl-1.5.dtd`` …
``cjsl-1.15.dtd``) and follow it exactly, element order included. A spec that
passes here would pass there, and the other way round, so clients find out
about a bad spec from the sandbox rather than from production.

The DTD is not fetched or read: each version's content models are below, as
the 1.15 model minus the elements a version did not have yet (that is how
the DTDs grew). Only the DOCTYPE's system id chooses the version.

Safety: expat is driven directly (no ``xml.etree`` convenience layer) so that
any entity declaration, an internal DTD subset or an external entity
reference stops the parse before anything is expanded; billion-laughs and
external-entity (XXE) documents are refused, not defused.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers import expat

DTD_URL = "http://localhost:8080/spcue/dtd/"
VERSIONS = ("1.5", "1.6", "1.7", "1.8", "1.9", "1.10", "1.11", "1.12", "1.13", "1.14",
            "1.15")
PARSE_EXCEPTION = "org.jdom.input.JDOMParseException"

# (element, occurrence, first version having it); occurrence "" = exactly once
Model = tuple[tuple[str, str, tuple[int, int]], ...]
_V = (1, 5)
CONTENT: dict[str, Model] = {
    "spec": (("facility", "?", _V), ("dept", "?", _V), ("show", "", _V), ("shot", "", _V),
             ("user", "", _V), ("email", "?", _V), ("uid", "", _V), ("job", "*", _V),
             ("depends", "*", _V)),
    "job": (("paused", "?", _V), ("priority", "?", (1, 11)), ("maxretries", "?", _V),
            ("maxcores", "?", (1, 13)), ("maxgpus", "?", (1, 13)), ("autoeat", "?", _V),
            ("localbook", "?", (1, 8)), ("os", "?", (1, 6)), ("env", "*", _V),
            ("layers", "?", _V)),
    "layers": (("layer", "+", _V),),
    "layer": (("cmd", "", _V), ("range", "", _V), ("chunk", "", _V), ("cores", "?", _V),
              ("threadable", "?", _V), ("memory", "?", _V), ("gpus", "?", (1, 12)),
              ("gpu", "?", (1, 7)), ("gpu_memory", "?", (1, 12)), ("timeout", "?", (1, 10)),
              ("timeout_llu", "?", (1, 10)), ("tags", "?", _V), ("limits", "?", _V),
              ("env", "*", _V), ("services", "?", _V), ("outputs", "*", (1, 14))),
    "limits": (("limit", "+", _V),),
    "services": (("service", "+", _V),),
    "outputs": (("output", "*", (1, 14)),),
    "env": (("key", "*", _V),),
    "depends": (("depend", "*", _V),),
    "depend": (("depjob", "", _V), ("deplayer", "?", _V), ("depframe", "?", _V),
               ("onjob", "", _V), ("onlayer", "?", _V), ("onframe", "?", _V)),
}
TEXT_ONLY = frozenset((
    "facility", "dept", "show", "shot", "user", "email", "uid", "paused", "priority",
    "maxretries", "maxcores", "maxgpus", "autoeat", "os", "localbook", "cmd", "range", "chunk",
    "cores", "threadable", "memory", "gpus", "gpu", "gpu_memory", "timeout", "timeout_llu",
    "tags", "limit", "service", "output", "key", "depjob", "deplayer", "depframe", "onjob",
    "onlayer", "onframe"))
DEPEND_TYPES = ("LAYER_ON_SIM_FRAME", "PREVIOUS_FRAME", "JOB_ON_JOB", "JOB_ON_LAYER",
                "JOB_ON_FRAME", "LAYER_ON_JOB", "LAYER_ON_FRAME", "LAYER_ON_LAYER",
                "FRAME_ON_JOB", "FRAME_ON_LAYER", "FRAME_ON_FRAME", "FRAME_BY_FRAME")
NMTOKEN = None  # attribute kinds: NMTOKEN, or a tuple of the allowed values
# element -> {attribute: (kind, required)}
ATTRIBUTES: dict[str, dict[str, tuple[Any, bool]]] = {
    "job": {"name": (NMTOKEN, True)},
    "localbook": {a: (NMTOKEN, True) for a in ("host", "cores", "memory", "threads", "gpu")},
    "layer": {"name": (NMTOKEN, True), "type": (("Render", "Util", "Post"), True)},
    "output": {"name": (NMTOKEN, True)},
    "key": {"name": (NMTOKEN, True)},
    "depend": {"anyframe": (NMTOKEN, False), "type": (DEPEND_TYPES, True)},
}
_NMTOKEN = re.compile(r"^[\w.:\u00b7-]+\Z")


class SpecXmlError(ValueError):
    """The document is not well-formed, unsafe, or not valid for its cjsl version."""


def _version_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def model(element: str, version: str) -> Model:
    """``element``'s content model as ``version`` of the DTD has it."""
    v = _version_key(version)
    items = tuple(i for i in CONTENT[element] if i[2] <= v)
    if element == "spec" and v >= (1, 9):  # uid became optional in 1.9
        items = tuple((n, "?" if n == "uid" else o, s) for n, o, s in items)
    return items


def model_text(element: str, version: str) -> str:
    """A content model written the way the DTD (and a validator's message) writes it."""
    return "(" + ",".join(n + o for n, o, _ in model(element, version)) + ")"


class _Reader:
    """One parse: expat events into an ElementTree, refusing anything entity-like."""

    def __init__(self) -> None:
        self.builder = ET.TreeBuilder()
        self.parser = expat.ParserCreate()
        self.lines: dict[int, int] = {}
        self.doctype: tuple[str, str | None] | None = None
        p = self.parser
        p.buffer_text = True
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = self._doctype
        p.EntityDeclHandler = self._entity
        p.ExternalEntityRefHandler = self._external
        p.SkippedEntityHandler = self._skipped
        p.StartElementHandler = self._start
        p.EndElementHandler = self.builder.end
        p.CharacterDataHandler = self.builder.data

    def _refuse(self, what: str) -> None:
        raise SpecXmlError(f"Error on line {self.parser.CurrentLineNumber}: {what} "
                           f"are not accepted in a job spec.")

    def _doctype(self, name: str, system_id: str | None, public_id: str | None,
                 has_internal_subset: int) -> None:
        if has_internal_subset:
            self._refuse("Internal DTD subsets")
        self.doctype = (name, system_id)

    def _entity(self, *args: Any) -> None:
        self._refuse("Entity declarations")

    def _external(self, *args: Any) -> int:
        self._refuse("External entities")
        return 0

    def _skipped(self, name: str, is_parameter_entity: int) -> None:
        # with an unread external DTD expat skips unknown entities instead of failing
        raise SpecXmlError(f"Error on line {self.parser.CurrentLineNumber}: The entity "
                           f'"{name}" was referenced, but not declared.')

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        elem = self.builder.start(tag, attrs)
        self.lines[id(elem)] = self.parser.CurrentLineNumber

    def read(self, text: str) -> ET.Element:
        try:
            self.parser.Parse(text, True)
        except expat.ExpatError as e:
            raise SpecXmlError(f"Error on line {e.lineno}: {expat.errors.messages[e.code]}")
        return self.builder.close()


def parse(text: str) -> tuple[ET.Element, str]:
    """The ``<spec>`` element and the cjsl version its DOCTYPE names.

    Raises :class:`SpecXmlError` with a message in the style of the Java
    parser Cuebot uses (``org.jdom.input.JDOMParseException: Error on line
    N: …``), so the RPC error reads like Cuebot's.
    """
    try:
        reader = _Reader()
        root = reader.read(text)
        version = _check_doctype(reader, root)
        _validate(root, version, reader.lines)
    except SpecXmlError as e:
        raise SpecXmlError(f"{PARSE_EXCEPTION}: {e}") from None
    return root, version


def _check_doctype(reader: _Reader, root: ET.Element) -> str:
    if reader.doctype is None:
        raise SpecXmlError("Error on line 1: Document is invalid: no grammar found.")
    name, system_id = reader.doctype
    if root.tag != name:
        raise SpecXmlError(f'Error on line 1: Document root element "{root.tag}", must match '
                           f'DOCTYPE root "{name}".')
    m = re.fullmatch(re.escape(DTD_URL) + r"cjsl-(\d+\.\d+)\.dtd", system_id or "")
    if not m or m.group(1) not in VERSIONS:
        raise SpecXmlError(f"Error on line 1: the DTD {system_id} is not one of the cjsl "
                           f"DTDs ({DTD_URL}cjsl-{VERSIONS[0]}.dtd … cjsl-{VERSIONS[-1]}.dtd).")
    return m.group(1)


def _validate(elem: ET.Element, version: str, lines: dict[int, int]) -> None:
    line = lines.get(id(elem), 1)

    def fail(message: str) -> None:
        raise SpecXmlError(f"Error on line {line}: {message}")

    tag = elem.tag
    if tag not in CONTENT and tag not in TEXT_ONLY:
        fail(f'Element type "{tag}" must be declared.')
    declared = ATTRIBUTES.get(tag, {})
    for attr, value in elem.attrib.items():
        if attr not in declared:
            fail(f'Attribute "{attr}" must be declared for element type "{tag}".')
        kind, _ = declared[attr]
        if kind is NMTOKEN and not _NMTOKEN.match(value):
            fail(f'Attribute value "{value}" of type NMTOKEN must be a name token.')
        if isinstance(kind, tuple) and value not in kind:
            fail(f'Attribute "{attr}" with value "{value}" must have a value from the list '
                 f'"{" ".join(kind)} ".')
    for attr, (_, required) in declared.items():
        if required and attr not in elem.attrib:
            fail(f'Attribute "{attr}" is required and must be specified for element type '
                 f'"{tag}".')
    children = list(elem)
    if tag in TEXT_ONLY:
        if children:
            fail(f'The content of element type "{tag}" must match "(#PCDATA)*".')
        return
    for child in children:
        if child.tag not in CONTENT and child.tag not in TEXT_ONLY:
            line = lines.get(id(child), line)
            fail(f'Element type "{child.tag}" must be declared.')
    stray = [elem.text] + [c.tail for c in children]
    if any(t and t.strip() for t in stray) or not _matches([c.tag for c in children],
                                                             model(tag, version)):
        fail(f'The content of element type "{tag}" must match "{model_text(tag, version)}".')
    for child in children:
        _validate(child, version, lines)


def _matches(tags: list[str], items: Model) -> bool:
    """Whether ``tags`` follow a sequence model (names in a model are distinct: greedy works)."""
    i = 0
    for name, occurrence, _ in items:
        n = 0
        while i < len(tags) and tags[i] == name and (n == 0 or occurrence in ("*", "+")):
            i += 1
            n += 1
        if n == 0 and occurrence in ("", "+"):
            return False
    return i == len(tags)
