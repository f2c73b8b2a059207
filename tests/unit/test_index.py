"""core/index.py: the attributes a project page carries, written and read back."""

from __future__ import annotations

import pytest

from rocm_release.core.index import IndexLink, IndexPageError, parse_project_page, project_page, wheel_href

WHEEL = "vllm-0.9.0+rocm710-cp312-cp312-manylinux_2_28_x86_64.whl"
SHA = "a" * 64
META = "b" * 64


def link(**fields: str | None) -> IndexLink:
    return IndexLink(href=wheel_href("../", WHEEL), filename=WHEEL, sha256=SHA, **fields)


def test_a_link_with_every_attribute_reads_back_as_written() -> None:
    written = link(requires_python=">=3.9,<3.13", metadata_sha256=META, upload_time="2026-12-02T11:40:00Z")
    page = project_page("vllm", [written])
    assert parse_project_page(page) == [written]
    assert f'data-core-metadata="sha256={META}"' in page
    assert f'data-dist-info-metadata="sha256={META}"' in page  # PEP 714: both names, one value
    assert 'data-upload-time="2026-12-02T11:40:00Z"' in page
    assert 'data-requires-python="&gt;=3.9,&lt;3.13"' in page


def test_a_link_without_metadata_or_upload_time_has_neither_attribute() -> None:
    page = project_page("vllm", [link()])
    assert "metadata" not in page and "upload-time" not in page
    assert parse_project_page(page) == [link()]


def test_the_older_metadata_name_alone_is_read() -> None:
    page = f'<a href="../{WHEEL}#sha256={SHA}" data-dist-info-metadata="sha256={META}">x</a>'
    assert parse_project_page(page)[0].metadata_sha256 == META


@pytest.mark.parametrize("value", ["true", "sha256=", f"sha512={META}", f"sha256={META[:-1]}",
                                   f"sha256={META.upper()}", f"sha256={META} ", ""])
@pytest.mark.parametrize("attribute", ["data-core-metadata", "data-dist-info-metadata"])
def test_a_malformed_metadata_attribute_is_refused_at_parse(attribute: str, value: str) -> None:
    with pytest.raises(IndexPageError, match="not sha256=<64 hex>"):
        parse_project_page(f'<a href="../{WHEEL}#sha256={SHA}" {attribute}="{value}">x</a>')


def test_a_metadata_attribute_without_a_value_is_refused_at_parse() -> None:
    with pytest.raises(IndexPageError, match="not sha256=<64 hex>"):
        parse_project_page(f'<a href="../{WHEEL}#sha256={SHA}" data-core-metadata>x</a>')


def test_two_metadata_attributes_that_disagree_are_refused_at_parse() -> None:
    page = (f'<a href="../{WHEEL}#sha256={SHA}" data-core-metadata="sha256={META}" '
            f'data-dist-info-metadata="sha256={SHA}">x</a>')
    with pytest.raises(IndexPageError, match="disagree"):
        parse_project_page(page)


@pytest.mark.parametrize("value", ["2026-12-02T11:40:00.5Z", "2026-12-02T11:40:00.123456Z"])
def test_an_upload_time_with_a_fraction_of_a_second_reads_back(value: str) -> None:
    assert parse_project_page(project_page("vllm", [link(upload_time=value)]))[0].upload_time == value


@pytest.mark.parametrize("value", [
    "yesterday", "2026-12-02", "2026-12-02 11:40:00Z", "2026-12-02T11:40:00", "2026-12-02T11:40:00+01:00",
    "2026-13-02T11:40:00Z", "2026-02-30T11:40:00Z", "2026-12-02T25:00:00Z", "2026-12-02T11:40:00.1234567Z", "",
])
def test_an_upload_time_that_is_not_iso_8601_utc_is_refused_at_parse(value: str) -> None:
    with pytest.raises(IndexPageError, match="not ISO 8601"):
        parse_project_page(f'<a href="../{WHEEL}#sha256={SHA}" data-upload-time="{value}">x</a>')


@pytest.mark.parametrize("fields", [{"metadata_sha256": "true"}, {"metadata_sha256": META + '" onclick="x'},
                                    {"upload_time": "2026-12-02"}])
def test_no_page_is_written_with_a_malformed_attribute(fields: dict[str, str]) -> None:
    with pytest.raises(IndexPageError):
        project_page("vllm", [link(**fields)])
