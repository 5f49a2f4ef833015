"""MkDocs hooks for the cdatlib docs site (tools/build_docs.py always registers this file).

On every notebook page:
- formulas: tools/build_docs.py left each formula of a markdown cell as `<span class="cdat-math" data-mathml="...">`
  (base64 MathML, so markdown never parsed inside it); put the MathML in. Browsers render MathML natively.
- no network: drop what nbconvert's template emits for view-time CDN scripts: the MathJax loader
  (`<script src="">` with `custom_mathjax_url: ""`, plus its config) and the mermaid module loader.
- table of contents: mkdocs-jupyter builds the TOC from its own markdown conversion, whose slugs differ from the
  heading ids in the HTML (duplicates, headings with code or links, ...). Rebuild it from the headings in the
  rendered page, and give each heading a unique id (`x`, `x_1`, ...; an API entry keeps `#name`, nbdev's anchor).
"""
import base64, html as _html, re

MATH_CLASS = 'cdat-math'
_math = re.compile(r'<span class="%s" data-mathml="([A-Za-z0-9+/=]*)"></span>' % MATH_CLASS)
_mathjax = re.compile(r'<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->', re.S)
_empty_script = re.compile(r'<script src="">\s*</script>')
_module_scripts = re.compile(r'<script type="module">(?:(?!</script>).)*?</script>', re.S)
_heading = re.compile(r'<h([1-6])\b([^>]*)>(.*?)</h\1>', re.S)
_id_attr = re.compile(r'\bid="([^"]*)"')
_cell_start = re.compile(r'<div class="jp-Cell jp-(Markdown|Code)Cell\b')


def _restore_math(html):
    return _math.sub(lambda m: base64.b64decode(m.group(1)).decode('utf-8'), html)


def _strip_cdn_stubs(html):
    html = _mathjax.sub('', html)
    html = _empty_script.sub('', html)
    # nbconvert's mermaid loader imports mermaid from cdnjs when a page has a diagram: not offline, drop it
    return _module_scripts.sub(lambda m: '' if 'mermaid' in m.group() else m.group(), html)


def _text(fragment):
    "Plain text of a heading's inner HTML (its permalink dropped), HTML-escaped for the TOC"
    fragment = re.sub(r'<a class="anchor-link"[^>]*>.*?</a>', '', fragment, flags=re.S)
    fragment = re.sub(r'<annotation\b.*?</annotation>', '', fragment, flags=re.S)
    return _html.escape(' '.join(_html.unescape(re.sub(r'<[^>]+>', '', fragment)).split()), quote=False)


def fix_headings(html, toc_depth=3, api_class='cdat-api-name'):
    """Unique heading ids and the TOC tokens for them. Headings are nbconvert's (they carry an `anchor-link`);
    those in markdown cells go into the TOC, those in outputs only get unique ids."""
    heads = [m for m in _heading.finditer(html) if 'class="anchor-link"' in m.group(3) and _id_attr.search(m.group(2))]
    head_ids = {_id_attr.search(m.group(2)).group(1) for m in heads}
    taken = set(_id_attr.findall(html)) - head_ids          # ids of anything else on the page
    api = [m for m in heads if api_class in m.group(2)]
    api_ids = {_id_attr.search(m.group(2)).group(1) for m in api}
    taken |= api_ids
    cells = [(m.start(), m.group(1)) for m in _cell_start.finditer(html)]
    out, pos, tokens, stack = [], 0, [], []
    for m in heads:
        level, attrs, inner = int(m.group(1)), m.group(2), m.group(3)
        old = _id_attr.search(attrs).group(1)
        new, k = old, 0
        if m in api and old in api_ids: api_ids.discard(old)     # the first entry of a name keeps nbdev's anchor
        else:
            while not new or new in taken: k += 1; new = f'{old}_{k}'
            taken.add(new)
        if new != old:
            attrs = attrs.replace(f'id="{old}"', f'id="{new}"', 1)
            inner = inner.replace(f'class="anchor-link" href="#{old}"', f'class="anchor-link" href="#{new}"', 1)
        out += [html[pos:m.start()], f'<h{level}{attrs}>{inner}</h{level}>']; pos = m.end()
        kind = next((k for s, k in reversed(cells) if s < m.start()), 'Markdown')
        if kind != 'Markdown' or level > toc_depth: continue
        tok = {'level': level, 'id': new, 'name': _text(inner), 'children': []}
        while stack and stack[-1]['level'] >= level: stack.pop()
        (stack[-1]['children'] if stack else tokens).append(tok); stack.append(tok)
    out.append(html[pos:])
    return ''.join(out), tokens


def on_page_content(html, page, config, files):
    html = _strip_cdn_stubs(html)
    if not page.file.src_uri.endswith('.ipynb'): return html     # markdown pages: Python-Markdown did it all
    html = _restore_math(html)
    try: depth = int(config['plugins']['mkdocs-jupyter'].config['toc_depth'])
    except Exception: depth = 3
    from mkdocs.structure.toc import get_toc
    html, tokens = fix_headings(html, depth)
    page.toc = get_toc(tokens)
    return html
