"""JUnit XML parsing, including documents written to attack the parser."""

from __future__ import annotations

import pytest

from shared.states import TestStatus
from worker.junit import JUnitError, parse

PYTEST_STYLE = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.5">
    <testcase classname="tests.test_model" name="test_accuracy" time="0.125"/>
    <testcase classname="tests.test_model" name="test_recall" time="0.250">
      <failure message="assert 0.81 &gt;= 0.9">def test_recall():
&gt;       assert recall &gt;= 0.9
E       assert 0.81 &gt;= 0.9</failure>
    </testcase>
    <testcase classname="tests.test_model" name="test_io" time="0.001">
      <error message="fixture 'data' not found"/>
    </testcase>
    <testcase classname="tests.test_model" name="test_gpu" time="0">
      <skipped type="pytest.skip" message="no GPU">skipped on CPU</skipped>
    </testcase>
    <testcase name="bare"/>
  </testsuite>
</testsuites>
"""


def test_pytest_report() -> None:
    cases = parse(PYTEST_STYLE)
    assert [c.name for c in cases] == [
        "tests.test_model.test_accuracy",
        "tests.test_model.test_recall",
        "tests.test_model.test_io",
        "tests.test_model.test_gpu",
        "bare",
    ]
    assert [c.status for c in cases] == [
        TestStatus.PASSED,
        TestStatus.FAILED,
        TestStatus.ERROR,
        TestStatus.SKIPPED,
        TestStatus.PASSED,
    ]
    assert cases[0].duration_ms == pytest.approx(125.0)
    assert cases[0].message is None
    assert cases[1].message is not None
    assert cases[1].message.startswith("assert 0.81 >= 0.9\ndef test_recall():")
    assert cases[2].message == "fixture 'data' not found"
    assert cases[3].message == "no GPU\nskipped on CPU"
    assert cases[4].duration_ms is None


def test_single_testsuite_root_and_odd_times() -> None:
    cases = parse(
        '<testsuite><testcase name="a" time="1,234.5"/><testcase name="b" time="soon"/>'
        '<testcase name="c" time="-1"/><testcase name="d" time="nan"/></testsuite>'
    )
    assert [c.duration_ms for c in cases] == [1_234_500.0, None, None, None]


def test_empty_suite() -> None:
    assert parse("<testsuites/>") == []


@pytest.mark.parametrize(
    "document",
    [
        "",
        "<testsuite>",
        "<testsuite><testcase name='a'></testsuite>",
        "not xml at all",
    ],
)
def test_malformed_is_refused(document: str) -> None:
    with pytest.raises(JUnitError, match="not well-formed"):
        parse(document)


def test_wrong_root_is_refused() -> None:
    with pytest.raises(JUnitError, match="root element"):
        parse("<html><testcase name='a'/></html>")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite><testcase name="&lol9;"/></testsuite>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="x"><failure message="&secret;"/></testcase></testsuite>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite SYSTEM "http://127.0.0.1:9/evil.dtd">
<testsuite><testcase name="x"/></testsuite>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>
<testsuite/>
"""

UNPARSED_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!NOTATION gif SYSTEM "image/gif"><!ENTITY logo SYSTEM "logo.gif" NDATA gif>]>
<testsuite/>
"""

PLAIN_DOCTYPE = b"""<?xml version="1.0"?><!DOCTYPE testsuite><testsuite><testcase name="x"/></testsuite>"""


@pytest.mark.parametrize(
    "document",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, UNPARSED_ENTITY, PLAIN_DOCTYPE],
    ids=[
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "parameter-entity",
        "unparsed-entity",
        "doctype",
    ],
)
def test_hostile_documents_are_refused(document: bytes) -> None:
    with pytest.raises(JUnitError, match="DOCTYPE"):
        parse(document)


def test_undeclared_entity_is_refused_not_expanded() -> None:
    with pytest.raises(JUnitError):
        parse(b'<testsuite><testcase name="&passwd;"/></testsuite>')


def test_predefined_entities_and_char_refs_still_work() -> None:
    (case,) = parse(b'<testsuite><testcase name="a &lt; b &amp;&#x20;c"/></testsuite>')
    assert case.name == "a < b & c"
