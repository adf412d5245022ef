"""The report page: index.html says everything index.md says, with real tables and the figures inline,
and opens in a real headless browser (Debian's chromium) as a page with its tables and decoded images."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _runs import build, case_row, channel, rank_row, window

from energy_hpc.analysis.report import (
    Block,
    Heading,
    Image,
    Items,
    Para,
    Table,
    to_html,
    to_markdown,
    write_report,
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report over two runs (1 and 2 nodes: scaling too) with stages, flags and odd characters."""
    tmp = tmp_path_factory.mktemp("report")
    files = []
    for n in (1, 2):
        chans = [
            channel(r, power=lambda t: 100 + 20 * np.sin(t), t_end=12.0, name=f"c{r}", node=r, device=f"d{r}")
            for r in range(n)
        ]
        wins = []
        for r in range(n):
            wins.append(window(r, -1, "idle", 0.5, 1.5))
            for i in range(3):
                a = 2.0 + 3 * i
                wins.append(window(r, 0, "measure", a, a + 2.0, 2, iteration=i))
                wins.append(window(r, 0, "measure", a, a + 1.0, 2, iteration=i, stage="base"))
                wins.append(window(r, 0, "measure", a + 1.0, a + 2.0, 2, iteration=i, stage="refiner"))
        files.append(
            build(
                tmp / f"n{n}.h5",
                chans,
                wins,
                ranks=[rank_row(node=r) for r in range(n)],
                cases=[case_row(model="<sd&x>", label="a|b")],
                n_nodes=n,
                synthetic=True,
            )
        )
    return write_report(files, tmp / "rep")


class _Page(HTMLParser):
    """The text a reader sees, the table cells, and the images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.cells: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tables = 0
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        elif tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
        elif tag == "table":
            self.tables += 1
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _md_pieces(md: str) -> list[str]:
    """The text content of every non-blank line of a Markdown page: headings and emphasis without their
    marks, each cell of a table row, an image's alt text and file."""
    out = []
    for line in md.splitlines():
        line = line.strip()
        if not line or re.fullmatch(r"\|[-|]+\|", line):
            continue
        if line.startswith("|"):
            out += [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            out += [m.group(1), m.group(2)]
        else:
            out.append(re.sub(r"^(#+|-) ", "", line).strip("*"))
    return out


def test_every_line_of_index_md_is_in_index_html(report: Path) -> None:
    md = report.read_text()
    page = _page((report.parent / "index.html").read_text())
    text = " ".join("".join(page.text).split())
    srcs = {i["src"] for i in page.images} | {i["alt"] for i in page.images}
    pieces = _md_pieces(md)
    assert len(pieces) > 40
    for piece in pieces:
        assert " ".join(piece.split()) in text or piece in srcs, piece
    # real tables: the energy table, the stage table and the scaling table, as cells, not <pre>
    assert page.tables == 3 and "<pre>" not in (report.parent / "index.html").read_text()
    for name in ("Energy per case", "Energy per stage", "Scaling over node counts", "Power over time"):
        assert f"## {name}" in md
    assert "<sd&x>" in page.cells and "a|b" in page.cells and "refiner" in page.cells
    assert "run file(s): n1.h5, n2.h5" in text and "Tables: table.md" in text
    assert "SYNTHETIC" in text
    assert {i["src"] for i in page.images} == {
        "energy_per_unit.png",
        "energy_per_unit_stages.png",
        "scaling.png",
        "power_n1.png",
        "power_n2.png",
    }
    for img in page.images:
        assert (report.parent / img["src"]).is_file() and img["alt"]


def test_the_page_escapes_every_text() -> None:
    blocks: list[Block] = [
        Heading(1, "<h1>"),
        Para("a & b <script>"),
        Table(["<th>"], [["<td>&"]]),
        Items(["<li>"]),
        Image('x".png', "<alt>"),
    ]
    page = to_html(blocks, "<title>")
    parsed = _page(page)
    assert "a & b <script>" in parsed.text and "<li>" in parsed.text
    assert parsed.cells == ["<th>", "<td>&"] and parsed.images == [{"src": 'x".png', "alt": "<alt>"}]
    assert "<script" not in page and "&lt;title&gt;" in page
    assert "| <td>& |" in to_markdown(blocks)


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


# written into a copy of the page: after load, each image's decoded width goes into the DOM
_PROBE = """<script>
addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-natural-width", img.naturalWidth);
  document.body.setAttribute("data-loaded", document.images.length);
});
</script>"""


def test_report_opens_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (bash .ci/install-browser.sh installs Debian's chromium)")
    folder = report.parent
    html_text = (folder / "index.html").read_text()
    probe = folder / "_probe.html"  # beside the page, so that its relative image paths resolve alike
    # one image that cannot load: the check must see it as broken
    probe.write_text(
        html_text.replace("</body>", '<img id="control" src="missing.png">' + _PROBE + "</body>")
    )
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    try:
        dom = subprocess.run(
            [*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        probe.unlink()
    page = _page(dom)
    assert re.search(r'<body[^>]*data-loaded="6"', dom), dom[:500]
    assert page.tables == 3 and len(page.cells) > 50
    assert "Energy report" in "".join(page.text)
    images = {i.get("src", ""): i for i in page.images}
    assert images.pop("missing.png")["data-natural-width"] == "0"  # the control: broken is seen
    assert len(images) == 5
    for src, img in images.items():
        assert (folder / src).is_file(), src
        assert int(img["data-natural-width"]) == _png_size(folder / src)[0], src  # decoded
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2000", (folder / "index.html").as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert _png_size(shot) == (1280, 2000)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.std() > 0.05  # not a blank page
