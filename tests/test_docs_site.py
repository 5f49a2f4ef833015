"""The documentation site builds offline from nbs/ with one command and renders in a real browser.

Builds the real repo's notebooks into a temp folder (`python tools/build_docs.py --out ... --work ...`, under
`unshare -n`, i.e. with no network, where that is permitted), serves it on 127.0.0.1 and opens pages in headless
Chromium (Debian's `chromium`): the home page has a title and navigation; a notebook page shows a rendered API entry
(show_doc signature + docstring) styled by the site's CSS and a figure that actually loaded (naturalWidth > 0);
every page renders its formulas (MathML with a non-zero size), its table-of-contents links scroll, and no page asks
another host for anything (Chromium's net log).
Without a browser, every page's HTML is checked: each internal link and anchor resolves (TOC entries included), nothing
is loaded from another host, formulas of markdown cells are MathML and code and outputs are never touched by formula
processing (`$_$` in a printed id stays text), and a widget shows a static rendering, not its repr.
Also: a broken notebook makes the build fail loudly.
Without chromium the browser checks are skipped, unless CDATLIB_REQUIRE_BROWSER=1 (CI), where they fail.
"""
import html, http.server, json, os, posixpath, re, shutil, subprocess, sys, threading
from functools import lru_cache, partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT/'tools'/'build_docs.py'
PREFERRED = ('metrics.html', 'formats.html')   # notebook pages known to have exported functions and figures
sys.path.insert(0, str(BUILD.parent))
import build_docs   # noqa: E402  (the formula finder and widget renderer, for the unit checks)


@lru_cache(None)
def _offline():
    "A command prefix that runs without network (`unshare -n`, or in a user namespace), or [] where not permitted"
    for pre in (['unshare', '-n'], ['unshare', '-rn']):
        try:
            if shutil.which(pre[0]) and subprocess.run(pre + ['true'], capture_output=True, timeout=20).returncode == 0:
                return pre
        except (OSError, subprocess.SubprocessError): pass
    return []


def _run_build(*args, timeout=600, offline=True):
    return subprocess.run([*(_offline() if offline else []), sys.executable, str(BUILD), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    if not any((ROOT/'nbs').glob('*.ipynb')): pytest.skip('no notebooks in nbs/ yet')
    tmp = tmp_path_factory.mktemp('docs')
    r = _run_build('--out', tmp/'site', '--work', tmp/'work', '-q')   # with no network where unshare is permitted
    assert r.returncode == 0, f"docs build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return tmp/'site'


@pytest.fixture(scope='module')
def pages(site):
    "{site-relative path: parsed page} for every HTML page"
    from bs4 import BeautifulSoup   # a dependency of nbconvert
    return {p.relative_to(site).as_posix(): BeautifulSoup(p.read_text(encoding='utf-8'), 'html.parser')
            for p in sorted(site.rglob('*.html'))}


def _chromium():
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if exe: return exe
    if os.environ.get('CDATLIB_REQUIRE_BROWSER') == '1':
        pytest.fail('chromium not found but CDATLIB_REQUIRE_BROWSER=1: apt-get install -y chromium')
    pytest.skip('chromium not installed (apt-get install -y chromium); set CDATLIB_REQUIRE_BROWSER=1 to make this fail')


# A same-origin harness page: loads the target page in an iframe, waits for it (and its images), and writes what it
# found into its own DOM, which `chromium --dump-dom` prints. No webdriver needed.
HARNESS = """<!doctype html><html><body><pre id="result">pending</pre><script>
const target = new URLSearchParams(location.search).get('page');
const f = document.createElement('iframe'); f.style.width = '1400px'; f.style.height = '1000px';
f.onload = async () => {
  const d = f.contentDocument, w = f.contentWindow;
  const imgs = [...d.querySelectorAll('.jp-OutputArea-output img, .md-content img')];
  await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));
  const api = [...d.querySelectorAll('.cdat-api[data-symbol]')].map(s => {
    const cell = s.closest('.jp-MarkdownCell');
    return {symbol: s.dataset.symbol, heading: cell && cell.querySelector('h3') ? cell.querySelector('h3').textContent : '',
            signature: cell && cell.querySelector('pre') ? cell.querySelector('pre').textContent : '',
            doc: cell && cell.querySelector('em') ? cell.querySelector('em').textContent : '',
            border: cell ? w.getComputedStyle(cell).borderLeftWidth : ''};
  });
  const nav = [...d.querySelectorAll('.md-nav--primary a.md-nav__link')].filter(a => a.offsetParent !== null);
  document.getElementById('result').textContent = JSON.stringify({
    title: d.title, h1: (d.querySelector('.md-content h1') || {}).textContent || '',
    nav: nav.map(a => a.textContent.trim()).filter(Boolean),
    images: imgs.map(i => ({w: i.naturalWidth, h: i.naturalHeight, complete: i.complete, visible: i.offsetWidth > 0})),
    api: api, code_cells: d.querySelectorAll('.jp-CodeCell').length,
    outputs: d.querySelectorAll('.jp-OutputArea-output').length,
    math: d.querySelectorAll('math').length});
};
f.src = target; document.body.appendChild(f);
</script></body></html>"""


@pytest.fixture(scope='module')
def server(site):
    class H(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith(('/__harness__.html', '/__all__.html')):
                b = (HARNESS if self.path.startswith('/__harness__.html') else ALL_HARNESS).encode()
                self.send_response(200); self.send_header('Content-Type', 'text/html'); self.send_header('Content-Length', str(len(b)))
                self.end_headers(); self.wfile.write(b); return
            return super().do_GET()
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(H, directory=str(site)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown(); httpd.server_close()


def _open(exe, url, tmp_path, budget_ms=15000):
    "Load `url` in headless chromium via the harness; returns the harness's JSON report"
    cmd = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
           f'--user-data-dir={tmp_path/"chromium-profile"}', f'--virtual-time-budget={budget_ms}', '--dump-dom', url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no harness output from chromium (rc={r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert m.group(1) != 'pending', f"page did not finish loading in the browser: {url}"
    return json.loads(html.unescape(m.group(1)))


def _notebook_page(site):
    "A page with both a rendered API entry and a figure: a preferred one if it qualifies, else the first found"
    def ok(p):
        s = p.read_text(encoding='utf-8')
        return 'class="cdat-api"' in s and re.search(r'<img[^>]+src="data:image/png', s)
    cands = [site/n for n in PREFERRED] + sorted(site.glob('*.html'))
    page = next((p for p in cands if p.exists() and p.name not in ('index.html', '404.html') and ok(p)), None)
    if page is None: pytest.skip('no notebook page has both an exported function and a figure yet')
    return page.name


def test_site_structure(site):
    pages = {p.stem for p in site.glob('*.html')}
    nbs = [p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.'))]
    assert 'index' in pages and len(pages) >= len(nbs), pages
    assert (site/'search'/'search_index.json').exists()
    assert not list(site.rglob('.*')), 'build scratch files (dot files) published with the site'


_EXTERNAL = re.compile(r'^(?:[a-zA-Z][\w+.-]*:)?//')
_RESOURCE_ATTRS = {'script': 'src', 'img': 'src', 'iframe': 'src', 'source': 'src', 'video': 'src', 'audio': 'src',
                   'track': 'src', 'embed': 'src', 'object': 'data', 'link': 'href', 'input': 'src'}
_CSS_URL = re.compile(r'''(?:@import\s+|url\(\s*)['"]?((?:https?:)?//[^'")\s]+)''')


def _internal_target(page, url):
    "(site-relative file, fragment) an internal link points at; None for another site, mailto:, data:, ..."
    if _EXTERNAL.match(url) or re.match(r'[a-zA-Z][\w+.-]*:', url): return None
    u = urlsplit(url)
    path = unquote(u.path)
    tgt = posixpath.normpath(posixpath.join(posixpath.dirname(page), path)) if path else page
    if path.endswith('/') or tgt == '.': tgt = posixpath.join('' if tgt == '.' else tgt, 'index.html')
    return tgt, unquote(u.fragment)


def test_internal_links_and_anchors(site, pages):
    "Every internal href / src (page.html, page.html#anchor, #anchor, assets) resolves to a file and an element id"
    ids = {k: {t['id'] for t in s.find_all(id=True)} | {t['name'] for t in s.find_all('a', attrs={'name': True})}
           for k, s in pages.items()}
    dead, toc_dead, n = [], [], 0
    for page, soup in pages.items():
        if page == '404.html': continue          # its links are relative to wherever the server shows it
        for tag in soup.find_all(['a', *_RESOURCE_ATTRS]):
            attr = 'href' if tag.name == 'a' else _RESOURCE_ATTRS[tag.name]
            url = tag.get(attr)
            if not url or (tag.name == 'link' and 'canonical' in (tag.get('rel') or [])): continue
            t = _internal_target(page, url)
            if t is None: continue
            n += 1
            tgt, frag = t
            where = f"{page}: <{tag.name} {attr}={url!r}> {tag.get_text(' ', strip=True)[:40]!r}"
            if not (site/tgt).is_file(): dead.append(where + ': no such file'); continue
            if frag and tgt.endswith('.html') and frag not in ids.get(tgt, ()):
                (toc_dead if tag.find_parent(class_='md-nav--secondary') else dead).append(where + ': no such id')
    print(f"{n} internal links and anchors checked on {len(pages)} pages")
    assert n > 100, f"only {n} internal links found: is the site complete?"
    assert not toc_dead, f"{len(toc_dead)} table-of-contents links to no heading:\n" + '\n'.join(toc_dead[:40])
    assert not dead, f"{len(dead)} dead internal links of {n}:\n" + '\n'.join(dead[:40])


def test_nothing_from_another_host(site, pages):
    "No page loads a script, stylesheet, image, frame or font from another host, now or from a script at view time"
    bad = []
    for page, soup in pages.items():
        for tag in soup.find_all(list(_RESOURCE_ATTRS)):
            url = tag.get(_RESOURCE_ATTRS[tag.name]) or ''
            if tag.name == 'link' and not set(tag.get('rel') or []) & {'stylesheet', 'icon', 'preload', 'modulepreload',
                                                                        'prefetch', 'manifest'}: continue
            if _EXTERNAL.match(url): bad.append(f"{page}: <{tag.name}> {url}")
        for sc in soup.find_all('script', src=False):
            # a script that builds a URL at view time: the widget manager from unpkg, mermaid from cdnjs, ...
            for url in re.findall(r'''(?:https?:)?//[\w-]+(?:\.[\w-]+)+[^\s'"`)]*''', sc.string or ''):
                bad.append(f"{page}: inline script mentions {url}")
            if 'jupyter.widget' in (sc.get('type') or ''): bad.append(f"{page}: widget state for a view-time manager")
        for st in [*soup.find_all('style'), *soup.find_all(style=True)]:
            for url in _CSS_URL.findall((st.string if st.name == 'style' else st['style']) or ''):
                bad.append(f"{page}: CSS loads {url}")
    for f in site.rglob('*.css'):
        bad += [f"{f.relative_to(site)}: CSS loads {url}" for url in _CSS_URL.findall(f.read_text(errors='replace'))]
    assert not bad, f"{len(bad)} network resources:\n" + '\n'.join(bad[:40])


def _markdown_text(cell):
    "Text of a rendered markdown cell outside code and formulas"
    import copy
    cell = copy.copy(cell)
    for t in cell.find_all(['code', 'pre', 'math', 'script', 'style']): t.decompose()
    return cell.get_text(' ')


_TEX = re.compile(r'(?<![\\\w])\$\$?[^$\s][^$]*?\$\$?|\\\(.+?\\\)|\\\[.+?\\\]', re.S)


def _notebook(site, page):
    "The notebook offered for download beside `page` (the processed notebook, formulas kept as TeX)"
    nb = site/Path(page).with_suffix('.ipynb')
    return json.loads(nb.read_text(encoding='utf-8'))['cells'] if nb.exists() else None


def test_formulas_are_mathml_and_code_is_untouched(site, pages):
    "Formulas of markdown cells are MathML; code, outputs and copy-button text never hold formula markup"
    problems, formulas, rendered = [], 0, 0
    for page, soup in pages.items():
        if 'cdat-math' in str(soup): problems.append(f"{page}: formula placeholder left in the page")
        for cell in soup.select('.jp-MarkdownCell'):
            left = _TEX.findall(_markdown_text(cell))
            if left: problems.append(f"{page}: raw TeX in a markdown cell: {left[:3]}")
        for box in soup.select('.jp-CodeCell, .jp-OutputArea, .clipboard-copy-txt, pre, code'):
            if box.find('math'): problems.append(f"{page}: MathML inside code or an output: {box.get_text()[:80]!r}")
        cells = _notebook(site, page)
        if cells is None: continue
        # as many formulas rendered as the notebook's markdown cells hold
        want = sum(sum(not f.startswith('@@') for f in build_docs._remove_math(''.join(c['source']))[1])
                   for c in cells if c['cell_type'] == 'markdown')
        got = sum(len(c.find_all('math')) for c in soup.select('.jp-MarkdownCell'))
        formulas += want; rendered += got
        if got != want: problems.append(f"{page}: {want} formulas in the notebook's markdown, {got} rendered as MathML")
        # what outputs print stays as printed: `$_$` in sample ids, ...
        printed = [o for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', [])
                   if '$_$' in json.dumps({k: v for k, v in o.items() if k in ('text', 'data')})]
        if printed and '$_$' not in ' '.join(b.get_text() for b in soup.select('.jp-OutputArea')):
            problems.append(f"{page}: a printed `$_$` did not survive in the outputs")
    assert not problems, f"{len(problems)} problems:\n" + '\n'.join(problems[:40])
    print(f"{rendered} formulas rendered as MathML")
    assert formulas > 0 and rendered == formulas, (formulas, rendered)


def test_copy_button_copies_code_as_written(site, pages):
    "The text a code cell's copy button copies is its source, `$` and all"
    checked = 0
    for page, soup in pages.items():
        cells = _notebook(site, page)
        if cells is None: continue
        srcs = {''.join(c['source']).strip() for c in cells if c['cell_type'] == 'code'}
        for box in soup.select('.clipboard-copy-txt'):
            t = box.get_text().strip()
            if '$' not in t: continue
            checked += 1
            assert not box.find('math') and t in srcs, f"{page}: copy text differs from the code: {t[:200]!r}"
    assert checked, 'no code cell with a `$` found (expected, e.g., the `$_$` ids of chapter 02)'


_REPR = re.compile(r'\b(?:[VH]Box|GridBox|Tab|Accordion|IntSlider|FloatSlider|Dropdown|Checkbox|Button|Output)'
                   r'\((?:children|value|description|layout|options|outputs)=')


def test_widgets_show_a_static_rendering(site, pages):
    "A widget output is a static rendering (a snapshot, or a note), never the widget's Python repr"
    reprs = [f"{p}: {m.group()}" for p, s in pages.items() for m in _REPR.finditer(s.get_text(' '))]
    assert not reprs, f"widget reprs on the site: {reprs[:10]}"
    if 'explorer.html' in pages:
        assert pages['explorer.html'].select('.jp-OutputArea .cdat-widget'), 'explorer page: no widget rendering'


def test_widget_snapshot_from_saved_state():
    "With the widget state saved in the notebook, the page gets a snapshot of the controls, HTML and image"
    import ipywidgets as W
    from ipywidgets.embed import embed_data
    view = W.VBox([W.HBox([W.Checkbox(description='misclassified (3)', value=True), W.Button(description='next ▶')]),
                   W.IntSlider(value=4, max=9, description='#'),
                   W.Dropdown(options=['vid$_$1', 'vid$_$2'], value='vid$_$2', description='id'),
                   W.HTML('<b>vid$_$2</b> “the music was dull”'), W.Image(value=b'\x89PNG...', format='png')])
    d = embed_data(views=[view])
    nb = {'metadata': {'widgets': {build_docs.WIDGET_STATE: d['manager_state']}}}
    html_, ok = build_docs._static_widget({build_docs.WIDGET_VIEW: d['view_specs'][0], 'text/plain': repr(view)},
                                          build_docs._widget_models(nb))
    assert ok and not _REPR.search(html_), html_
    for want in ('misclassified (3)', 'checked', 'next ▶', 'value="4"', '<option selected>vid$_$2</option>',
                 '<b>vid$_$2</b>', 'src="data:image/png;base64,'):
        assert want in html_, (want, html_)
    # the state was not saved: a note naming what the repr shows, not the repr
    html_, ok = build_docs._static_widget({build_docs.WIDGET_VIEW: {'model_id': 'gone'}, 'text/plain': repr(view)}, {})
    assert not ok and not _REPR.search(html_) and 'misclassified (3)' in html_, html_


def test_formula_finder_skips_code():
    "Formulas are found as JupyterLab finds them: a `$` in code spans, fenced code or escaped is not math"
    md = ("Ids look like `vid$_$clip` and $x^m_{i,t}$ is a feature; \\$5 is money.\n\n"
          "$$F_1 = \\frac{2TP}{2TP+FP+FN}$$\n\n```python\nlabel = 'std of $x^m$'\n```\n")
    text, n = build_docs._math_placeholders(md)
    assert n == 2, text
    assert '`vid$_$clip`' in text and "'std of $x^m$'" in text and '\\$5' in text, text
    mml = build_docs.tex_to_mathml(r'\mathcal N(0, 1) + \mathbb{R}^d', False)
    assert mml.startswith('<math alttext=') and '\U0001d4a9' in mml and '&#x0211D;' in mml, mml   # script N, double-struck R
    with pytest.raises(build_docs.DocsBuildError, match='can not be converted'): build_docs._math_placeholders('$x^$')


def test_links_between_pages_are_repaired():
    "nbdev's symbol links without an entry point at the class or become code; `NN_name.ipynb` links become pages"
    from collections import Counter
    nb_pages = {'01_dataset.ipynb': 'dataset.ipynb', '04_metrics.ipynb': 'metrics.ipynb'}
    md = ("[`Task.loss`](dataset.html#task.loss), [`_private`](dataset.html#_private), [`Task`](dataset.html#task), "
          "[the metrics chapter](04_metrics.ipynb#a-worked-example), [GitHub](https://github.com/x/y), "
          "`[not](a.ipynb)`")
    out = build_docs._fix_links(md, 'dataset.ipynb', '01_dataset.ipynb', set(nb_pages.values()), nb_pages,
                                {'dataset.ipynb': {'task'}}, Counter())
    assert out == ("[`Task.loss`](dataset.html#task), `_private`, [`Task`](dataset.html#task), "
                   "[the metrics chapter](metrics.html#a-worked-example), [GitHub](https://github.com/x/y), "
                   "`[not](a.ipynb)`"), out


def test_home_page_renders(site, server, tmp_path):
    r = _open(_chromium(), f'{server}/__harness__.html?page=/index.html', tmp_path)
    assert 'cdatlib' in r['title'].lower(), r['title']
    assert r['h1'].strip(), 'home page has no title heading'
    assert len(r['nav']) >= 3, f"navigation missing: {r['nav']}"
    assert any('API reference' in n for n in r['nav'])


def test_notebook_page_renders_api_and_figure(site, server, tmp_path):
    page = _notebook_page(site)
    r = _open(_chromium(), f'{server}/__harness__.html?page=/{page}', tmp_path)
    assert r['code_cells'] > 0 and r['outputs'] > 0, r
    api = [a for a in r['api'] if a['symbol'] and a['symbol'].split('.')[-1] in a['signature']
           and re.search(r'\b(def|class)\b', a['signature'])]
    assert api, f"{page}: no rendered API entry (show_doc signature) found: {r['api'][:3]}"
    assert any(a['heading'].strip().startswith(a['symbol']) and a['doc'].strip() for a in api), r['api'][:3]
    assert api[0]['border'] == '4px', f"site CSS (tools/docs/extra.css) not applied: {api[0]['border']!r}"
    figs = [i for i in r['images'] if i['complete'] and i['w'] > 0 and i['h'] > 0 and i['visible']]
    assert figs, f"{page}: no figure loaded: {r['images']}"


def _broken_nb(path, src, md='A notebook cell'):
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': '# Broken\n> a notebook that must fail the build'},
                    {'cell_type': 'markdown', 'metadata': {}, 'source': md},
                    {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': src}],
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb))


@pytest.mark.parametrize('kind', ['raises', 'invalid_json', 'bad_formula'])
def test_broken_notebook_fails_loudly(tmp_path, kind):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    p = nbs/'99_broken.ipynb'
    if kind == 'raises': _broken_nb(p, "#| export\ndef f(): return 1\nraise ValueError('boom from the broken notebook')")
    elif kind == 'bad_formula': _broken_nb(p, "x = 1", md='A formula that can not be typeset: $x^$')
    else: p.write_text('{"cells": [ this is not json')
    r = _run_build('--nbs', nbs, '--out', tmp_path/'site', '--work', tmp_path/'work', '-q', timeout=300)
    assert r.returncode != 0, f"build succeeded on a broken notebook:\n{r.stdout}\n{r.stderr}"
    assert '99_broken.ipynb' in r.stderr, r.stderr[-3000:]
    if kind == 'raises': assert 'boom from the broken notebook' in r.stderr, r.stderr[-3000:]
    if kind == 'bad_formula': assert "formula '$x^$' can not be converted" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'site'/'index.html').exists()


@pytest.mark.parametrize('page, symbol', [('cdat_transfer.html', 'pkt_loss'), ('cdat_confidence.html', 'ConfidNet'),
                                          ('cdat_masking.html', 'masking_gains'), ('hycon.html', 'hycon_losses')])
def test_method_chapter_page_renders(site, server, tmp_path, page, symbol):
    "The CDaT and HyCon chapters are on the site, with their API entries rendered in the browser"
    assert (site/page).exists(), f"{page} missing from the site: {sorted(p.name for p in site.glob('*.html'))}"
    r = _open(_chromium(), f'{server}/__harness__.html?page=/{page}', tmp_path)
    assert r['h1'].strip() and r['code_cells'] > 0, r
    names = [a['symbol'].split('.')[-1] for a in r['api'] if a['symbol']]
    assert symbol in names, f"{page}: no rendered API entry for {symbol}: {names[:10]}"


# Every page in one browser run: formulas shown (MathML boxes with a size), TOC entries that resolve and scroll.
ALL_HARNESS = """<!doctype html><html><body><pre id="result">pending</pre><script>
const pages = new URLSearchParams(location.search).get('pages').split(',');
const f = document.createElement('iframe'); f.style.width = '1400px'; f.style.height = '900px';
document.body.appendChild(f);
const out = [];
const sleep = ms => new Promise(r => setTimeout(r, ms));
function load(i) {
  if (i >= pages.length) { document.getElementById('result').textContent = JSON.stringify(out); return; }
  f.onload = async () => {
    const d = f.contentDocument, w = f.contentWindow;
    await sleep(200);
    const maths = [...d.querySelectorAll('.md-content math')];
    const toc = [...d.querySelectorAll('.md-sidebar--secondary .md-nav--secondary a.md-nav__link')]
      .map(a => a.getAttribute('href')).filter(h => h && h.startsWith('#'));
    const missing = toc.filter(h => !d.getElementById(decodeURIComponent(h.slice(1))));
    let scrolled = null;
    const last = [...d.querySelectorAll('.md-sidebar--secondary .md-nav--secondary a.md-nav__link')].pop();
    if (last && toc.length > 1) {
      w.scrollTo(0, 0); await sleep(50); last.click(); await sleep(300);
      const t = d.getElementById(decodeURIComponent(last.getAttribute('href').slice(1)));
      scrolled = w.scrollY > 0 && !!t && t.getBoundingClientRect().top < w.innerHeight;
    }
    out.push({page: pages[i], math: maths.length,
              math_unsized: maths.filter(m => { const r = m.getBoundingClientRect(); return !(r.width > 0 && r.height > 0); })
                                 .map(m => m.getAttribute('alttext')).slice(0, 5),
              toc: toc.length, toc_missing: missing, toc_scrolls: scrolled,
              // a formula renderer at view time would put its markup into code, copy-button text or outputs
              code_math: d.querySelectorAll(['.jp-CodeCell', '.clipboard-copy-txt', 'pre', 'code'].map(
                           s => s + ' math, ' + s + ' mjx-container').join(', ')).length,
              text_reprs: (d.body.innerText.match(/\\b[VH]Box\\(children=/g) || []).length});
    load(i + 1);
  };
  f.src = pages[i];
}
load(0);
</script></body></html>"""


def _page_requests(netlog):
    "URLs the pages asked for (Chromium's own background requests, which have no initiating page, left out)"
    text = netlog.read_text(encoding='utf-8', errors='replace').rstrip()
    try: log = json.loads(text)
    except ValueError: log = json.loads(text.rstrip(',') + ']}')         # a log cut short when chromium exits
    start = log['constants']['logEventTypes']['URL_REQUEST_START_JOB']
    return sorted({e['params']['url'] for e in log['events'] if e.get('type') == start and 'url' in e.get('params', {})
                   and e['params'].get('initiator') not in (None, 'not an origin')})


def test_every_page_renders_offline(site, pages, server, tmp_path):
    "In the browser, every page: formulas have a size, TOC links resolve and scroll, no request leaves 127.0.0.1"
    exe = _chromium()
    names = [p for p in pages if p != '404.html']
    netlog = tmp_path/'net.json'
    url = f"{server}/__all__.html?pages={','.join(names)}"
    cmd = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
           f'--user-data-dir={tmp_path/"chromium-profile"}', f'--log-net-log={netlog}',
           f'--virtual-time-budget={4000 * len(names)}', '--dump-dom', url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.S)
    assert m and m.group(1) != 'pending', f"pages did not finish loading (rc={r.returncode}):\n{r.stderr[-2000:]}"
    res = json.loads(html.unescape(m.group(1)))
    assert [x['page'] for x in res] == names
    foreign = [u for u in _page_requests(netlog) if urlsplit(u).hostname not in ('127.0.0.1', 'localhost')
               and not u.startswith(('data:', 'blob:', 'about:'))]
    assert not foreign, f"pages asked other hosts for: {foreign[:20]}"
    bad = [x for x in res if x['math_unsized'] or x['toc_missing'] or x['toc_scrolls'] is False or x['text_reprs']
           or x['code_math']]
    assert not bad, json.dumps(bad[:10], indent=1)
    assert max(x['math'] for x in res) >= 10, [(x['page'], x['math']) for x in res]   # e.g. metrics.html
