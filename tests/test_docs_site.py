"""The documentation site builds offline from nbs/ with one command and renders in a real browser.

Builds the real repo's notebooks into a temp folder (`python tools/build_docs.py --out ... --work ...`), serves it on
127.0.0.1 and opens the home page and a notebook page in headless Chromium (Debian's `chromium`): the home page has a
title and navigation; the notebook page shows a rendered API entry (show_doc signature + docstring) styled by the
site's CSS and a figure that actually loaded (naturalWidth > 0). Also: no page pulls a script/stylesheet/image from
the network, and a broken notebook makes the build fail loudly.
Without chromium the browser checks are skipped, unless CDATLIB_REQUIRE_BROWSER=1 (CI), where they fail.
"""
import html, http.server, json, os, re, shutil, subprocess, sys, threading
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT/'tools'/'build_docs.py'
PREFERRED = ('metrics.html', 'formats.html')   # notebook pages known to have exported functions and figures


def _run_build(*args, timeout=600):
    return subprocess.run([sys.executable, str(BUILD), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    if not any((ROOT/'nbs').glob('*.ipynb')): pytest.skip('no notebooks in nbs/ yet')
    tmp = tmp_path_factory.mktemp('docs')
    r = _run_build('--out', tmp/'site', '--work', tmp/'work', '-q')
    assert r.returncode == 0, f"docs build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return tmp/'site'


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
    math: d.querySelectorAll('mjx-container').length});
};
f.src = target; document.body.appendChild(f);
</script></body></html>"""


@pytest.fixture(scope='module')
def server(site):
    class H(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith('/__harness__.html'):
                b = HARNESS.encode()
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
    # offline: nothing loads scripts, stylesheets or images from the network (plain links to GitHub are fine)
    ext = re.compile(r'<(?:script|img|iframe)\b[^>]*\bsrc="(?:https?:)?//|<link\b[^>]*rel="stylesheet"[^>]*href="(?:https?:)?//'
                     r'|@import\s+url\((?:https?:)?//')
    offenders = [p.name for p in site.rglob('*.html') if ext.search(p.read_text(encoding='utf-8'))]
    assert not offenders, f"pages referencing network resources: {offenders}"


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


def _broken_nb(path, src):
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': '# Broken\n> a notebook that must fail the build'},
                    {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': src}],
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb))


@pytest.mark.parametrize('kind', ['raises', 'invalid_json'])
def test_broken_notebook_fails_loudly(tmp_path, kind):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    p = nbs/'99_broken.ipynb'
    if kind == 'raises': _broken_nb(p, "#| export\ndef f(): return 1\nraise ValueError('boom from the broken notebook')")
    else: p.write_text('{"cells": [ this is not json')
    r = _run_build('--nbs', nbs, '--out', tmp_path/'site', '--work', tmp_path/'work', '-q', timeout=300)
    assert r.returncode != 0, f"build succeeded on a broken notebook:\n{r.stdout}\n{r.stderr}"
    assert '99_broken.ipynb' in r.stderr, r.stderr[-3000:]
    if kind == 'raises': assert 'boom from the broken notebook' in r.stderr, r.stderr[-3000:]
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
