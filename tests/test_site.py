"""`make site`: every internal link and image of the built site resolves, anchors included."""

import importlib.util
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "course" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


class _Page(HTMLParser):
    """The link targets (href, src) and the anchors (id, name) of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.urls: list[str] = []
        self.anchors: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.urls.append(value)
            elif name in ("id", "name") and value is not None:
                self.anchors.add(value)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("site") / "_site"
    return out, builder.build_site(out)


@pytest.fixture(scope="module")
def pages(site) -> dict[Path, _Page]:
    out, _ = site
    return {path: _Page(path.read_text(encoding="utf-8")) for path in out.rglob("*.html")}


def test_the_build_reports_no_broken_link(site):
    _, broken = site
    assert broken == []


def test_site_holds_every_notebook_the_readme_and_the_guide(site):
    out, _ = site
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert (out / "notebooks" / f"{notebook.stem}.html").is_file()
    for page in ("index.html", "README.html", "course/guide.html", "course/README.html"):
        assert (out / page).is_file(), page
    assert list((out / "figures").glob("*.png"))


def test_index_lists_the_notebooks_in_order(site, pages):
    out, _ = site
    listed = [url for url in pages[out / "index.html"].urls if url.startswith("notebooks/")]
    expected = [
        f"notebooks/{p.stem}.html" for p in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    ]
    assert listed == expected


def test_every_internal_link_and_image_resolves(site, pages):
    out, _ = site
    unresolved = []
    for path, page in pages.items():
        for url in page.urls:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:  # external (https:, mailto:) or data: images
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            where = f"{path.relative_to(out)}: {url}"
            if out.resolve() not in target.parents or not target.is_file():
                unresolved.append(f"{where} (no file)")
            elif parts.fragment and target.suffix == ".html":
                anchors = pages[target].anchors  # nbconvert keeps %-escapes in its heading ids
                if parts.fragment not in anchors and unquote(parts.fragment) not in anchors:
                    unresolved.append(f"{where} (no anchor)")
    assert not unresolved, "\n".join(unresolved)


def test_links_to_ipynb_and_md_become_html(site, pages):
    out, _ = site
    readme = pages[out / "README.html"]
    assert "notebooks/01_attention_cost.html" in readme.urls
    assert not [u for u in readme.urls if u.endswith((".ipynb", ".md")) and "://" not in u]


def test_markdown_headings_carry_github_anchors():
    assert builder.github_slug("Tiny Shakespeare, `results/shakespeare.json`") == (
        "tiny-shakespeare-resultsshakespearejson"
    )
    html = builder.render_markdown("# Notation\n\n## Notes\n\n## Notes\n")
    assert 'id="notation"' in html and 'id="notes"' in html and 'id="notes-1"' in html
