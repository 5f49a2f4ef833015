"MkDocs hooks for the cdatlib docs site (registered in mkdocs.yml `hooks:`)"
import re

# mkdocs-jupyter's template always emits a MathJax <script>; with `custom_mathjax_url: ""` that is `<script src="">`,
# which does nothing but is noise in an offline site: drop it. Math is typeset by MathJax 3, fetched from the npm registry at build time.
_empty_script = re.compile(r'<script src="">\s*</script>')


def on_page_content(html, page, config, files):
    return _empty_script.sub('', html)
