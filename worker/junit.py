"""JUnit XML (pytest's --junitxml, Maven Surefire, Jest...) to test results.

The file is written by the step's command, so it is untrusted: DTDs are refused outright, which
rules out entity expansion ("billion laughs") and external entities without having to reason
about either. The tree is built from expat directly because ElementTree's parser exposes no
handler for DOCTYPE or entity declarations.
"""

from __future__ import annotations

import math
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any, NoReturn
from xml.etree.ElementTree import Element, TreeBuilder

from shared.states import TestStatus


class JUnitError(ValueError):
    """Not a JUnit XML document this worker is willing to read."""


@dataclass(frozen=True)
class JUnitCase:
    name: str
    status: TestStatus
    duration_ms: float | None
    message: str | None


def _refuse(*_: Any) -> NoReturn:
    raise JUnitError("XML with a DOCTYPE, entity declarations or external entities is refused")


def parse_xml(data: bytes | str) -> Element:
    """Parse without DTDs: a document declaring any is refused before anything is expanded."""
    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.buffer_text = True
    builder = TreeBuilder()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise JUnitError(f"not well-formed XML: {exc}") from None
    return builder.close()


def _duration_ms(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.replace(",", ""))
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds * 1000.0


def _message(element: Element) -> str | None:
    parts = [element.get("message") or "", (element.text or "").strip()]
    text = "\n".join(part for part in parts if part)
    return text or None


def cases(root: Element) -> list[JUnitCase]:
    if root.tag not in ("testsuites", "testsuite"):
        raise JUnitError(f"the root element is <{root.tag}>, not <testsuites> or <testsuite>")
    found: list[JUnitCase] = []
    for case in root.iter("testcase"):
        name = case.get("name") or "unnamed"
        classname = case.get("classname")
        status = TestStatus.PASSED
        message: str | None = None
        for tag, verdict in (
            ("failure", TestStatus.FAILED),
            ("error", TestStatus.ERROR),
            ("skipped", TestStatus.SKIPPED),
        ):
            child = case.find(tag)
            if child is not None:
                status = verdict
                message = _message(child)
                break
        found.append(
            JUnitCase(
                name=f"{classname}.{name}" if classname else name,
                status=status,
                duration_ms=_duration_ms(case.get("time")),
                message=message,
            )
        )
    return found


def parse(data: bytes | str) -> list[JUnitCase]:
    """The test cases of a JUnit XML document, in document order."""
    return cases(parse_xml(data))
