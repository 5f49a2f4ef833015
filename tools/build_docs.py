#!/usr/bin/env python
"""Build the cdatlib documentation site offline, in one command.

    python tools/build_docs.py            # -> site/index.html (open it, or serve site/ with any static server)

Pipeline (no Quarto needed; `nbdev-docs` remains the route where Quarto is installed):
1. nbdev's own doc processing (`nbdev.processors.FilterDefaults`, what `nbdev-docs` runs before Quarto) turns each
   `nbs/*.ipynb` into a processed notebook: `show_doc` entries inserted and rendered for every exported symbol,
   `#| hide` / `#| export` cells dropped, frontmatter (`# Title` + `> subtitle`) read, backticked symbols linked.
   The stored outputs (tables, figures, printed text) are kept; notebooks are NOT re-executed here.
2. A small adaptation step makes those notebooks render without Quarto: the title becomes a heading again,
   `show_doc` cells become markdown cells (so API entries get headings, anchors and TOC entries),
   Quarto-only cell options (`#| echo: false`, `#| code-fold`, ...) are applied or stripped, links to the
   hosted docs become relative links within this site, and a widget output becomes a static HTML snapshot drawn
   from the widget state saved in the notebook (no widget JavaScript on the page).
3. Links between pages are checked against the API entries (`page.html#sym` of a method without its own entry
   points at its class; one to an undocumented name becomes plain code; `NN_name.ipynb` links become the page).
   Formulas in markdown cells (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`, found as JupyterLab finds them, so
   `$` inside code spans and fenced code is left alone) are converted to MathML here, with `latex2mathml`;
   browsers render MathML natively. Code cells and outputs are never touched: a `$_$` in a printed id stays text.
4. MkDocs + Material (bundled JS/CSS, `font: false`) + mkdocs-jupyter render them into `site/`;
   `tools/docs/hooks.py` puts the formulas in, drops nbconvert's CDN script stubs (MathJax, mermaid) and makes the
   table of contents and the heading ids agree.

Everything runs offline, and the site loads nothing from another host when viewed. The build fails (exit status 1,
naming the notebook) on a notebook that can not be read, whose exported code raises, whose stored outputs contain
an error (unless the cell is tagged `raises-exception`), or with a formula that can not be converted.
"""
from __future__ import annotations

import argparse, json, logging, os, re, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent/'docs'
API_CLASS = 'cdat-api'
REMOVE_INPUT_TAG = 'remove_input'
_SKIP_NB_RE = re.compile(r'^[_.]')


class DocsBuildError(RuntimeError):
    "A notebook (or the site) could not be built"


# ---------------------------------------------------------------------------------------------------------------
# 1 + 2: process one notebook (runs in a worker process; cwd = project root so nbdev finds pyproject.toml)

def _slug(text):
    from mkdocs_jupyter.utils import slugify
    from nbconvert.filters.strings import _convert_header_id
    return _convert_header_id(slugify(text))


_re_source_link = re.compile(r'\[source\]\((\S+?)\)\{[^}]*\}')
_re_quarto_attr = re.compile(r'\]\(([^)\s]+)\)\{[^}]*\}')   # [txt](url){target="_blank" ...} -> [txt](url)


def _show_doc_md(md, sym):
    "Turn nbdev's show_doc markdown (written for Quarto) into an API-entry markdown cell for mistune/MkDocs"
    import html
    md = md.strip()
    if md.startswith('---'): md = md[3:].lstrip()
    src = ''
    m = _re_source_link.search(md)
    if m:
        src = f'<a class="{API_CLASS}-source" href="{m.group(1)}" title="source on GitHub">source</a>'
        md = (md[:m.start()] + md[m.end():]).lstrip()
    md = _re_quarto_attr.sub(r'](\1)', md)
    lines = md.splitlines()
    head = next((i for i,l in enumerate(lines) if l.startswith('#')), None)
    name = lines[head].lstrip('#').strip() if head is not None else sym
    anchor = name.lower()   # nbdev/_modidx links use `page.html#name.lower()` (e.g. `#task.loss`)
    spans = f'<span class="{API_CLASS}" data-symbol="{name}"></span>'
    if _slug(name) != anchor: spans += f'<span id="{anchor}"></span>'
    if head is not None:
        # the entry's heading as HTML with its id fixed: the API entry owns `#name` even where a section heading
        # of the same text comes first (tools/docs/hooks.py gives that one `name_1`)
        level, hid = len(lines[head]) - len(lines[head].lstrip('#')), _slug(name)
        lines[head] = (f'<h{level} id="{hid}" class="{API_CLASS}-name">{html.escape(name)}'
                       f'<a class="anchor-link" href="#{hid}">¶</a></h{level}>\n')   # a blank line ends the HTML block
    return '\n'.join([spans + src, ''] + lines)


def _linkify_local(text, prefix):
    "Links nbdev made to the hosted docs (`{doc_host}{doc_baseurl}/page.html#x`) -> relative links in this site"
    if not prefix or not text: return text
    return text.replace(prefix, '')


def _quarto_opts(src):
    "Split leading `#| key: value` lines off a code cell source"
    opts, lines = {}, src.splitlines()
    i = 0
    while i < len(lines) and (lines[i].startswith('#|') or not lines[i].strip()):
        m = re.match(r'#\|\s*([\w-]+)\s*:?\s*(.*)$', lines[i])
        if m: opts[m.group(1).lower()] = m.group(2).strip().strip('"\'')
        i += 1
    return opts, '\n'.join(lines[i:])


WIDGET_VIEW, WIDGET_STATE = 'application/vnd.jupyter.widget-view+json', 'application/vnd.jupyter.widget-state+json'
_re_widget_desc = re.compile(r"\b(?:description|value)='((?:[^'\\]|\\.)*)'")


def _widget_models(nb):
    "{model_id: {'model_name', 'state', 'buffers'}} from the widget state saved in the notebook's metadata"
    w = (nb.get('metadata') or {}).get('widgets') or {}
    return dict((w.get(WIDGET_STATE) or {}).get('state') or {})


def _widget_html(mid, models, depth=0):
    "Static HTML for the widget `mid` (and its children) as its saved state last showed it; None if not saved"
    import html
    m = models.get(str(mid).replace('IPY_MODEL_', ''))
    if m is None or depth > 20: return None
    kind, st = m.get('model_name', '').removesuffix('Model'), dict(m.get('state') or {})
    for b in m.get('buffers') or []:                               # binary values (an Image's bytes), base64 here
        if b.get('path') and b.get('encoding') == 'base64': st[b['path'][0]] = ('base64', b.get('data', ''))
    lay = (models.get(str(st.get('layout', '')).replace('IPY_MODEL_', '')) or {}).get('state') or {}
    if lay.get('display') == 'none' or lay.get('visibility') == 'hidden': return ''
    esc = lambda v: html.escape(str(v if v is not None else ''))
    desc = st.get('description') or ''
    label = f'<span class="cdat-widget-label">{esc(desc)}</span> ' if desc else ''
    kids = lambda: ''.join(_widget_html(c, models, depth+1) or '' for c in st.get('children') or [])
    if kind in ('Box', 'HBox', 'VBox', 'GridBox'):
        return f'<div class="cdat-widget-{"hbox" if kind == "HBox" else "vbox"}">{kids()}</div>'
    if kind in ('Tab', 'Accordion', 'Stack'):
        titles = st.get('titles') or []
        return '<div class="cdat-widget-vbox">' + ''.join(
            f'<div class="cdat-widget-label">{esc(titles[i] if i < len(titles) else "")}</div>{_widget_html(c, models, depth+1) or ""}'
            for i, c in enumerate(st.get('children') or [])) + '</div>'
    if kind in ('Checkbox', 'ToggleButton', 'Valid'):
        chk = ' checked' if st.get('value') else ''
        return f'<label class="cdat-widget-control"><input type="checkbox" disabled{chk}> {esc(desc)}</label>'
    if kind == 'Button':
        return f'<button class="cdat-widget-control" disabled>{esc(desc)}</button>'
    if kind.endswith('Slider') or kind.endswith('Progress'):
        v, lo, hi = st.get('value'), st.get('min', 0), st.get('max', 100)
        if isinstance(v, list): v = ' – '.join(map(str, v))
        tag = (f'<progress max="{esc(hi)}" value="{esc(v)}"></progress>' if kind.endswith('Progress') else
               f'<input type="range" min="{esc(lo)}" max="{esc(hi)}" value="{esc(v)}" disabled>')
        return f'<label class="cdat-widget-control">{label}{tag} <output>{esc(v)}</output></label>'
    if kind in ('Dropdown', 'Select', 'RadioButtons', 'ToggleButtons', 'SelectionSlider'):
        opts, idx = st.get('_options_labels') or [], st.get('index')
        o = ''.join(f'<option{" selected" if i == idx else ""}>{esc(x)}</option>' for i, x in enumerate(opts[:500]))
        return f'<label class="cdat-widget-control">{label}<select disabled>{o}</select></label>'
    if kind in ('HTML', 'HTMLMath'):
        return f'<div class="cdat-widget-html">{label}{st.get("value") or ""}</div>'
    if kind in ('Label', 'Text', 'Textarea', 'IntText', 'FloatText', 'BoundedIntText', 'BoundedFloatText', 'Password'):
        return f'<span class="cdat-widget-control">{label}<code>{esc(st.get("value"))}</code></span>'
    if kind == 'Image':
        v = st.get('value')
        if isinstance(v, tuple):
            fmt = st.get('format') or 'png'
            mime = 'image/svg+xml' if fmt == 'svg+xml' else f'image/{fmt}'
            return f'<img class="cdat-widget-image" alt="" src="data:{mime};base64,{v[1]}">'
        return ''
    if kind == 'Output':
        parts = []
        for o in st.get('outputs') or []:
            d = o.get('data') or {}
            if o.get('output_type') == 'stream': parts.append(f'<pre>{esc("".join(o.get("text") or ""))}</pre>')
            elif 'text/html' in d: parts.append(''.join(d['text/html']))
            elif 'image/png' in d: parts.append(f'<img alt="" src="data:image/png;base64,{"".join(d["image/png"]).strip()}">')
            elif 'text/plain' in d: parts.append(f'<pre>{esc("".join(d["text/plain"]))}</pre>')
        return f'<div class="cdat-widget-output">{"".join(parts)}</div>'
    return f'<span class="cdat-widget-control">{label}[{esc(kind or "widget")}]</span>'


_WIDGET_WORDS = {'Checkbox': 'checkbox', 'ToggleButton': 'toggle', 'Button': 'button', 'Dropdown': 'drop-down list',
                 'Select': 'list', 'RadioButtons': 'radio buttons', 'Text': 'text field', 'Textarea': 'text box',
                 'HTML': 'HTML view', 'Label': 'label', 'Image': 'image', 'Output': 'output area', 'Tab': 'tabs'}


def _static_widget(data, models):
    """HTML that replaces a widget output, and whether it is a real rendering: a snapshot drawn from the saved widget
    state; else the output's own HTML fallback if it has one; else a note naming what the repr shows of it."""
    import html
    mid = (data.get(WIDGET_VIEW) or {}).get('model_id')
    body = _widget_html(mid, models) if mid else None
    if body is not None:
        return (f'<div class="cdat-widget">{body}<p class="cdat-widget-note">A static snapshot of an interactive '
                'widget: run the notebook in Jupyter to use it.</p></div>'), True
    if 'text/html' in data:
        h = data['text/html']
        return ''.join(h) if isinstance(h, list) else h, True
    text = ''.join(data.get('text/plain') or '')
    kinds = []
    for k in re.findall(r'\b([A-Z]\w*?)(?:Model)?\(', text):
        w = _WIDGET_WORDS.get(k) or ('slider' if k.endswith('Slider') else None)
        if w and w not in kinds: kinds.append(w)
    found = [f'&ldquo;{html.escape(x)}&rdquo;' for x in _re_widget_desc.findall(text) if x.strip()]
    seen = (' It holds ' + ', '.join(kinds) + (' (' + ', '.join(found) + (', &hellip;' if text.endswith('…') else '') + ')'
            if found else '') + '.') if kinds else ''
    return (f'<div class="cdat-widget cdat-widget-missing"><p class="cdat-widget-note">An interactive widget: run the '
            f'notebook in Jupyter to use it. Its state was not saved with the notebook, so this page can not draw a '
            f'snapshot of it.{seen}</p></div>'), False


def _adapt(nb, name, prefix):
    "Adapt an nbdev-processed notebook (Quarto flavour) to mkdocs-jupyter; returns (nb, title)"
    from fastcore.nbio import mk_cell
    fm = dict(getattr(nb, 'frontmatter_', {}) or {})
    title = fm.get('title') or Path(name).stem
    cells, models, missing_state = [], _widget_models(nb), 0
    for c in nb.cells:
        src = c.get('source', '') or ''
        if c.cell_type == 'raw' and src.lstrip().startswith('---'): continue          # Quarto frontmatter
        if c.cell_type == 'markdown' and src.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        if c.cell_type == 'markdown':
            c.source = _linkify_local(src, prefix)
            cells.append(c); continue
        if c.cell_type != 'code': cells.append(c); continue
        for o in c.get('outputs', []):
            if o.get('output_type') == 'error' and 'raises-exception' not in c.get('metadata', {}).get('tags', []):
                raise DocsBuildError(f"{name}: cell {c.get('idx_', '?')} has a stored error output "
                                     f"({o.get('ename')}: {o.get('evalue')}): fix and re-run the notebook\n{src}")
        opts, body = _quarto_opts(src)
        if re.match(r'\s*show_doc\(', body):                                        # rendered API entry
            md = next((o['data']['text/markdown'] for o in c.get('outputs', [])
                       if 'text/markdown' in o.get('data', {})), None)
            if md is None:
                raise DocsBuildError(f"{name}: `{body.strip()}` produced no documentation output")
            md = ''.join(md) if isinstance(md, list) else md
            sym = re.match(r'\s*show_doc\(([^,)]*)', body).group(1).strip()
            cells.append(mk_cell(_linkify_local(_show_doc_md(md, sym), prefix), 'markdown')); continue
        if str(opts.get('include', '')).lower() == 'false': continue
        c.source = body
        if str(opts.get('echo', '')).lower() == 'false':
            c.metadata.setdefault('tags', []).append(REMOVE_INPUT_TAG)
        if str(opts.get('output', '')).lower() == 'false': c.outputs = []
        for o in c.get('outputs', []):                       # widgets: a static snapshot; markdown outputs: fix links
            d = o.get('data', {})
            if WIDGET_VIEW in d:
                html_, ok = _static_widget(d, models)
                if not ok: missing_state += 1
                o['data'] = {'text/html': html_}
                continue
            if 'text/markdown' in d:
                md = d['text/markdown']
                d['text/markdown'] = _linkify_local(''.join(md) if isinstance(md, list) else md, prefix)
        if not c.source.strip() and not c.get('outputs'): continue
        cells.append(c)
    head = f"# {title}"
    if fm.get('description'): head += f"\n\n> {fm['description']}"
    nb.cells = [mk_cell(head, 'markdown')] + cells
    for k in ('path_', 'frontmatter_', 'has_docs_'): nb.pop(k, None)
    # no widget state on the page: with it, nbconvert's template loads the widget manager from a CDN (unpkg)
    nb.get('metadata', {}).pop('widgets', None)
    if missing_state:
        why = ("the widget state saved in the notebook is from another run" if models else "no widget state is saved")
        print(f"warning: {name}: {missing_state} widget output(s) without their widget state ({why}): the page shows a "
              "note instead of a snapshot. Re-execute the notebook with nbclient (`jupyter nbconvert --to notebook "
              "--execute --inplace`, which saves the state) or save it from JupyterLab with Settings > Save Widget "
              "State Automatically", file=sys.stderr, flush=True)
    for c in nb.cells:                                  # drop nbdev's private attributes before writing
        for k in [k for k in c if k.endswith('_')]: c.pop(k)
        c['metadata'] = {k:v for k,v in c.get('metadata', {}).items() if k == 'tags'}   # e.g. CaptureShell timings
    return nb, title


def process_notebook(src, dst, root):
    "nbdev doc-processing of `src` -> mkdocs-ready notebook at `dst`; returns its title"
    os.chdir(root)
    os.environ['IN_TEST'] = '1'   # as nbdev's own doc processing does: notebooks may skip heavy work
    import warnings
    import matplotlib; matplotlib.use('Agg')
    from fastcore.nbio import read_nb, write_nb
    from nbdev.config import get_config
    from nbdev.processors import FilterDefaults
    src, dst = Path(src), Path(dst)
    try:
        nb = read_nb(src)
    except Exception as e:
        raise DocsBuildError(f"{src}: can not be read as a notebook: {type(e).__name__}: {e}") from None
    if not nb.cells: raise DocsBuildError(f"{src}: notebook has no cells")
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        try:
            FilterDefaults()(nb)
        except DocsBuildError: raise
        except Exception as e:
            raise DocsBuildError(f"{src}: nbdev doc processing failed: {type(e).__name__}: {e}\n(To render API docs nbdev runs "
                                 "the exported cells, the show_doc cells and every cell containing an import, each whole: "
                                 "a cell that mixes an import with code needing earlier cells fails here, as it does under "
                                 "`nbdev-docs`. Move the import into the notebook's imports cell.)") from None
    mixed = sum('Found cells containing imports and other code' in str(w.message) for w in ws)
    if mixed: print(f"warning: {src.name}: {mixed} cell(s) mix imports with other code; nbdev runs such cells whole "
                    "when rendering docs (move imports to the imports cell)", file=sys.stderr, flush=True)
    cfg = get_config()
    prefix = f"{(cfg.get('doc_host') or '').rstrip('/')}{(cfg.get('doc_baseurl') or '').rstrip('/')}/" if cfg.get('doc_host') else ''
    nb, title = _adapt(nb, src.name, prefix)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    syms = [m.group(1) for c in nb.cells if c.cell_type == 'markdown'
            for m in re.finditer(rf'class="{API_CLASS}" data-symbol="([^"]+)"', c.source)]
    return title, syms


# ---------------------------------------------------------------------------------------------------------------
# links between pages and formulas (main process, once every notebook is processed)

_re_md_link = re.compile(r'(?<!!)\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\(([^()\s]+)\)')
_re_code_span = re.compile(r'(`+)(?:[^`]|[^`][\s\S]*?[^`])\1(?!`)')
_re_fence = re.compile(r'^(?P<f>`{3,}|~{3,})[^\n]*\n[\s\S]*?^(?P=f)[`~]*[ \t]*$', re.M)


def _code_ranges(text):
    "(start, end) of fenced code blocks and inline code spans in markdown `text`"
    fences = [m.span() for m in _re_fence.finditer(text)]
    spans = [m.span() for m in _re_code_span.finditer(text) if not any(a <= m.start() < b for a, b in fences)]
    return fences + spans


def _fix_links(text, page, src_rel, pages, nb_pages, documented, stats):
    """Links in one markdown cell of `page` (work-relative `x.ipynb`; `src_rel` the notebook's path under nbs/):
    `NN_name.ipynb[#x]` -> `name.html[#x]`; a backticked symbol link `page.html#sym` whose entry does not exist points
    at its class's entry (`#cls.method` -> `#cls`), else becomes plain code. Other links are left as written."""
    import posixpath
    code = _code_ranges(text)
    here, src_dir = posixpath.dirname(page), posixpath.dirname(src_rel)
    def sub(m):
        if any(a <= m.start() < b for a, b in code): return m.group()
        label, target = m.group(1), m.group(2)
        if re.match(r'[a-zA-Z][\w+.-]*:|//', target): return m.group()      # another site, mailto:, data:, ...
        path, _, frag = target.partition('#')
        tgt = page
        if path:
            if path.endswith('.ipynb'):
                tgt = nb_pages.get(posixpath.normpath(posixpath.join(src_dir, path)))   # `04_metrics.ipynb`
                if tgt is None:
                    cand = posixpath.normpath(posixpath.join(here, path))             # `metrics.ipynb`
                    tgt = cand if cand in pages else None
                if tgt is None: return m.group()
                stats['notebook links'] += 1
                path = posixpath.relpath(tgt[:-len('.ipynb')] + '.html', here or '.')
            elif path.endswith('.html'):
                tgt = posixpath.normpath(posixpath.join(here, path))[:-len('.html')] + '.ipynb'
                if tgt not in pages: return m.group()
            else: return m.group()
        if frag and re.fullmatch(r'`[^`]+`', label.strip()) and tgt in documented:
            docs = documented[tgt]
            if frag not in docs:
                f = frag
                while '.' in f and f not in docs: f = f.rsplit('.', 1)[0]
                if f in docs: frag = f; stats['links to a method, pointed at its class'] += 1
                else: stats['links to an undocumented name, made plain code'] += 1; return label
        return f'[{label}]({path}{"#" + frag if frag else ""})'
    return _re_md_link.sub(sub, text)


# Formulas are found as JupyterLab's `removeMath` finds them (the same split, code spans and fences masked first)
_MATHSPLIT = re.compile(r'(\$\$?|\\(?:begin|end)\{[a-z]*\*?\}|\\[{}$]|[{}]|(?:\n\s*)+|@@\d+@@'
                        r'|\\\\(?:\(|\)|\[|\])|\\(?:\(|\)|\[|\]))', re.I)


def _remove_math(text):
    "Markdown `text` -> (text with `@@i@@` markers, [the i-th formula with its delimiters, or a literal `@@n@@`])"
    math, has_code = [], '`' in text or '~~~' in text
    if has_code:
        text = text.replace('~', '~T')
        text = re.sub(r'^(?P<fence>`{3,}|(~T){3,})[^`\n]*\n([\s\S]*?)^(?P=fence)`*$',
                      lambda m: m.group().replace('$', '~D'), text, flags=re.M)
        text = re.sub(r'(^|[^\\])(`+)([^\n]*?[^`\n])\2(?!`)', lambda m: m.group().replace('$', '~D'), text, flags=re.M)
        detilde = lambda t: re.sub(r'~([TD])', lambda m: '~' if m.group(1) == 'T' else '$', t)
    else: detilde = lambda t: t
    blocks = _MATHSPLIT.split(text.replace('\r\n', '\n').replace('\r', '\n'))
    start = end = last = None; braces = 0
    def process(i, j):
        block = detilde(''.join(blocks[i:j+1]))
        for k in range(i+1, j+1): blocks[k] = ''
        blocks[i] = f'@@{len(math)}@@'; math.append(block)
    i = 1
    while i < len(blocks):
        b = blocks[i]
        if b.startswith('@'): blocks[i] = f'@@{len(math)}@@'; math.append(b)
        elif start is not None:
            if b == end:
                if braces: last = i
                else: process(start, i); start = end = last = None
            elif re.search(r'\n.*\n', b):
                if last is not None: i = last; process(start, i)
                start = end = last = None; braces = 0
            elif b == '{': braces += 1
            elif b == '}' and braces: braces -= 1
        elif b in ('$', '$$'): start, end, braces = i, b, 0
        elif b in ('\\\\(', '\\\\[', '\\(', '\\['): start, end, braces = i, b[:-1] + (')' if b[-1] == '(' else ']'), 0
        elif b[1:6] == 'begin': start, end, braces = i, '\\end' + b[6:], 0
        i += 2
    if start is not None and last is not None: process(start, last)
    return detilde(''.join(blocks)), math


def _math_parts(formula):
    "(TeX, display) of a formula as found by `_remove_math`"
    for o, c, disp in (('$$', '$$', True), ('\\\\[', '\\\\]', True), ('\\\\(', '\\\\)', False),
                       ('\\[', '\\]', True), ('\\(', '\\)', False), ('$', '$', False)):
        if formula.startswith(o) and formula.endswith(c) and len(formula) >= len(o) + len(c):
            return formula[len(o):len(formula)-len(c)], disp
    return formula, True                                                        # \begin{env}...\end{env}


# MathML Core (what browsers render) ignores mathvariant other than "normal": use the Unicode letters instead
_VARIANTS = {'bold': (0x1D400, 0x1D41A, 0x1D7CE, {}), 'italic': (0x1D434, 0x1D44E, None, {'h': 0x210E}),
             'bold-italic': (0x1D468, 0x1D482, None, {}), 'sans-serif': (0x1D5A0, 0x1D5BA, 0x1D7E2, {}),
             'monospace': (0x1D670, 0x1D68A, 0x1D7F6, {}),
             'script': (0x1D49C, 0x1D4B6, None, dict(B=0x212C, E=0x2130, F=0x2131, H=0x210B, I=0x2110, L=0x2112,
                                                     M=0x2133, R=0x211B, e=0x212F, g=0x210A, o=0x2134)),
             'fraktur': (0x1D504, 0x1D51E, None, dict(C=0x212D, H=0x210C, I=0x2111, R=0x211C, Z=0x2128)),
             'double-struck': (0x1D538, 0x1D552, 0x1D7D8, dict(C=0x2102, H=0x210D, N=0x2115, P=0x2119, Q=0x211A,
                                                               R=0x211D, Z=0x2124))}

_re_entity_or_alnum = re.compile(r'&#?\w+;|[A-Za-z0-9]')

def _variant_chars(m):
    upper, lower, digit, holes = _VARIANTS[m.group(2)]
    def ch(c):
        c = c.group()
        if c.startswith('&'): return c
        if c in holes: return chr(holes[c])
        if 'A' <= c <= 'Z': return chr(upper + ord(c) - 65)
        if 'a' <= c <= 'z': return chr(lower + ord(c) - 97)
        return chr(digit + ord(c) - 48) if digit else c
    return f'<{m.group(1)}>{_re_entity_or_alnum.sub(ch, m.group(3))}</{m.group(1)}>'


def tex_to_mathml(tex, display=False):
    "MathML for one TeX formula (`latex2mathml`), with the TeX kept as `alttext`"
    import html
    from latex2mathml.converter import convert
    out = convert(tex.strip(), display='block' if display else 'inline')
    out = re.sub(r'<(mi|mn|mtext) mathvariant="(%s)">([^<]*)</\1>' % '|'.join(_VARIANTS), _variant_chars, out)
    return out.replace('<math ', f'<math alttext="{html.escape(" ".join(tex.split()))}" ', 1)


MATH_CLASS = 'cdat-math'

def _math_placeholders(text):
    """Markdown `text` with each formula replaced by an inline placeholder holding its MathML (base64), which
    tools/docs/hooks.py swaps back in after markdown rendering (so markdown never parses inside the MathML).
    Returns (text, number of formulas)."""
    import base64
    if not any(d in text for d in ('$', '\\(', '\\[', '\\begin')): return text, 0
    masked, math = _remove_math(text)
    if not any(not f.startswith('@@') for f in math): return text, 0
    def put(m):
        f = math[int(m.group(1))]
        if f.startswith('@@'): return f
        tex, disp = _math_parts(f)
        try: mml = tex_to_mathml(tex, disp)
        except Exception as e: raise DocsBuildError(f"formula {f!r} can not be converted to MathML: {type(e).__name__}: {e}") from None
        return f'<span class="{MATH_CLASS}" data-mathml="{base64.b64encode(mml.encode()).decode()}"></span>'
    return re.sub(r'@@(\d+)@@', put, masked), sum(not f.startswith('@@') for f in math)


def _finish_notebooks(work, jobs, nbs, documented, download):
    """Second pass over the processed notebooks: fix links between pages, keep a copy for download (TeX as written),
    and put the formulas in as MathML placeholders for rendering. Returns counts for the log."""
    from collections import Counter
    stats, errors = Counter(), []
    pages = {d.relative_to(work).as_posix() for d in jobs.values()}
    nb_pages = {s.relative_to(nbs).as_posix(): d.relative_to(work).as_posix() for s, d in jobs.items()}
    for s, d in jobs.items():
        page = d.relative_to(work).as_posix()
        nb = json.loads(d.read_text(encoding='utf-8'))
        for c in nb.get('cells', []):
            if c.get('cell_type') != 'markdown': continue
            src = c.get('source', '')
            src = ''.join(src) if isinstance(src, list) else src
            c['source'] = _fix_links(src, page, s.relative_to(nbs).as_posix(), pages, nb_pages, documented, stats)
        (download/page).parent.mkdir(parents=True, exist_ok=True)
        (download/page).write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding='utf-8')
        for c in nb.get('cells', []):
            if c.get('cell_type') != 'markdown': continue          # code cells and all outputs: never
            try: c['source'], n = _math_placeholders(c['source'])
            except DocsBuildError as e:
                errors.append(f"{s.relative_to(nbs)}: markdown cell {c['source'].strip()[:60]!r}...: {e}"); continue
            stats['formulas'] += n
        d.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding='utf-8')
    if errors: raise DocsBuildError("docs build failed:\n" + "\n".join(errors))
    return stats


# ---------------------------------------------------------------------------------------------------------------
# 4: site

def _page_name(nb_path, nbs):
    "nbdev's page naming (`04_metrics.ipynb` -> `metrics`), so nbdev's doc links resolve inside this site"
    from nbdev.doclinks import nbpath2html   # `nbs/04_metrics.ipynb` -> `metrics.html`
    rel = Path(nb_path).relative_to(nbs)
    return rel.parent/nbpath2html(rel).with_suffix('.ipynb').name


def _nav_label(nb_path, title):
    m = re.match(r'^(\d+)[_-]', Path(nb_path).name)
    return f"{m.group(1)} · {title}" if m else title


def _api_page(root, lib_path, pages, documented):
    "A markdown page listing every exported symbol (from `_modidx.py`) with a link to its API entry"
    p = root/lib_path/'_modidx.py'
    if not p.exists(): return None
    g = {}
    exec(compile(p.read_text(), str(p), 'exec'), g)
    syms = g.get('d', {}).get('syms', {})
    have = {str(v.with_suffix('.html')) for v in pages}
    out = ['# API reference', '', 'Every exported name, grouped by module; each links to its entry in the notebook that builds it.', '']
    n = 0
    for mod in sorted(syms):
        items = []
        for k, v in sorted(syms[mod].items()):
            nm = k[len(mod)+1:] if k.startswith(mod+'.') else k
            if not (v and v[0]) or nm.split('.')[-1].startswith('_'): continue     # private and dunder members
            page = v[0].split('#')[0]
            if page not in have: continue
            docd = documented.get(str(Path(page).with_suffix('.ipynb')), set())
            # link to the entry itself, else to its class's entry (methods are documented with their class)
            anchor = next((a for a in (nm.lower(), nm.split('.')[0].lower()) if a in docd), None)
            items.append(f"- [`{nm}`]({Path(page).with_suffix('.ipynb')}{'#'+anchor if anchor else ''})")
        if not items: continue
        out += [f'## `{mod}`', ''] + items + ['']
        n += len(items)
    return '\n'.join(out) if n else None


def build(root=ROOT, nbs=None, out=None, work=None, workers=None, config=None, quiet=False):
    "Build the site; returns the site folder. Raises `DocsBuildError` on any failure."
    t0 = time.time()
    root = Path(root).resolve()
    nbs, out, work, config = [Path(p).resolve() if p else None for p in (nbs, out, work, config)]
    os.chdir(root)
    from nbdev.config import get_config
    cfg = get_config(root)
    nbs = nbs or Path(cfg.nbs_path)
    out = out or root/'site'
    work = work or root/'_proc'/'.mkdocs'
    config = config or (root/'mkdocs.yml' if (root/'mkdocs.yml').exists() else ROOT/'mkdocs.yml')
    workers = workers or min(4, os.cpu_count() or 1)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    nb_files = sorted(p for p in nbs.rglob('*.ipynb')
                      if not any(_SKIP_NB_RE.match(part) for part in p.relative_to(nbs).parts))
    if not nb_files: raise DocsBuildError(f"no notebooks found in {nbs}")
    if work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True)

    # other files beside the notebooks (images the markdown refers to, ...), but not Quarto/nbdev config
    for p in nbs.rglob('*'):
        rel = p.relative_to(nbs)
        if p.is_dir() or p.suffix in ('.ipynb', '.yml', '.yaml', '.qmd') or p.name == 'styles.css': continue
        if any(_SKIP_NB_RE.match(part) for part in rel.parts): continue
        (work/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, work/rel)

    # 1+2: nbdev processing in parallel worker processes
    jobs = {p: work/_page_name(p, nbs) for p in nb_files}
    titles, documented, errors = {}, {}, []
    log(f"processing {len(jobs)} notebooks from {nbs} with {workers} workers")
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context('spawn')) as ex:
        futs = {ex.submit(process_notebook, str(s), str(d), str(root)): s for s,d in jobs.items()}
        for f in as_completed(futs):
            s = futs[f]
            try: titles[s], syms = f.result(); documented[str(jobs[s].relative_to(work))] = {x.lower() for x in syms}
            except Exception as e: errors.append(f"{s.relative_to(nbs)}: {e}" if str(s) not in str(e) else str(e))
    if errors: raise DocsBuildError("docs build failed:\n" + "\n".join(sorted(errors)))
    log(f"  processed in {time.time()-t0:.1f}s")

    # navigation: home (index.ipynb), then notebooks in file order, then the API index
    nav, pages = [], [d.relative_to(work) for d in jobs.values()]
    for s in nb_files:
        rel = str(jobs[s].relative_to(work))
        if rel == 'index.ipynb': nav.insert(0, {'Home': rel})
        else: nav.append({_nav_label(s, titles[s]): rel})
    api = _api_page(root, Path(cfg.lib_path).name, pages, documented)
    if api:
        (work/'api.md').write_text(api)
        nav.append({'API reference': 'api.md'})
    if not (work/'index.ipynb').exists() and not (work/'index.md').exists():
        (work/'index.md').write_text(f"# {cfg.get('title', cfg.lib_name)}\n\n{cfg.get('description', '')}\n")
        nav.insert(0, {'Home': 'index.md'})
    (work/'assets').mkdir(exist_ok=True)
    shutil.copy2(ASSETS/'extra.css', work/'assets'/'extra.css')

    # links between pages, then formulas -> MathML (markdown cells only); downloads keep the TeX as written
    download = work/'.download'          # a dot folder: not part of the site MkDocs builds from `work`
    t1 = time.time()
    stats = _finish_notebooks(work, jobs, nbs, documented, download)
    log("  " + ", ".join(f"{v} {k}" for k, v in sorted(stats.items())) + f" ({time.time()-t1:.1f}s)")

    # 4: MkDocs
    from mkdocs.config import load_config
    from mkdocs.commands.build import build as mkdocs_build
    if not config.exists(): raise DocsBuildError(f"{config} not found")
    mk = load_config(str(config), docs_dir=str(work), site_dir=str(out), nav=nav)
    ours = ASSETS/'hooks.py'          # formulas, TOC ids, no CDN stubs: this build's hooks run whatever the config lists
    listed = [h for h, mod in mk['hooks'].items() if Path(getattr(mod, '__file__', '') or h).resolve() != ours.resolve()]
    if len(listed) == len(mk['hooks']):
        mk = load_config(str(config), docs_dir=str(work), site_dir=str(out), nav=nav, hooks=[*listed, str(ours)])
    level = logging.WARNING if quiet else logging.INFO
    logging.getLogger('mkdocs').setLevel(level)
    if not logging.getLogger().handlers: logging.basicConfig(level=level, format='%(levelname)s %(name)s: %(message)s')
    t1 = time.time()
    try: mkdocs_build(mk)
    except Exception as e: raise DocsBuildError(f"mkdocs build failed: {type(e).__name__}: {e}") from e
    if not (out/'index.html').exists(): raise DocsBuildError(f"mkdocs produced no {out/'index.html'}")
    missing = [p for p in pages if not (out/p.with_suffix('.html')).exists()]
    if missing: raise DocsBuildError(f"pages missing from the site: {missing}")
    for p in pages:                      # the notebook offered for download: formulas as TeX, not placeholders
        if (out/p).exists(): shutil.copy2(download/p, out/p)
    log(f"  rendered in {time.time()-t1:.1f}s; site at {out}/index.html ({time.time()-t0:.1f}s total)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--root', default=str(ROOT), help='project root holding pyproject.toml (default: this checkout)')
    ap.add_argument('--nbs', help='notebooks folder (default: nbdev nbs_path)')
    ap.add_argument('--out', help='site folder (default: site/)')
    ap.add_argument('--work', help='processed-notebook folder (default: _proc/.mkdocs/)')
    ap.add_argument('--workers', type=int, help='parallel notebook processors (default: min(4, cpus))')
    ap.add_argument('--config', help='mkdocs.yml (default: the one at the project root)')
    ap.add_argument('-q', '--quiet', action='store_true')
    a = ap.parse_args(argv)
    try: build(root=a.root, nbs=a.nbs, out=a.out, work=a.work, workers=a.workers, config=a.config, quiet=a.quiet)
    except DocsBuildError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    # run as an importable module, so the spawned workers can unpickle `build_docs.process_notebook`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import build_docs
    sys.exit(build_docs.main())
