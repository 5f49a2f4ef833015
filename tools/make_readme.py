"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which these machines lack).

    python tools/make_readme.py          # write README.md
    python tools/make_readme.py --check  # exit 1 if README.md is not what index.ipynb makes
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_directive = re.compile(r'^\s*#\s*\|')

def _text(x): return ''.join(x) if isinstance(x, list) else x

def _code_cell(cell):
    src = _text(cell['source'])
    if any(re.match(r'^\s*#\s*\|\s*(hide|export|default_exp)\b', l) for l in src.splitlines()): return ''
    src = '\n'.join(l for l in src.splitlines() if not _directive.match(l)).strip()
    out = [f"```python\n{src}\n```"] if src else []
    texts = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream' and o.get('name') == 'stdout': texts.append(_text(o['text']))
        elif o['output_type'] in ('execute_result', 'display_data') and 'text/plain' in o.get('data', {}):
            texts.append(_text(o['data']['text/plain']))
    if texts: out.append("```\n" + ''.join(texts).rstrip('\n') + "\n```")
    return '\n\n'.join(out)

def readme_text(nb_path=ROOT/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = [_text(c['source']).strip() if c['cell_type'] == 'markdown' else _code_cell(c) for c in nb['cells']]
    body = '\n\n'.join(p for p in parts if p) + '\n'
    note = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"
    return note + body

if __name__ == '__main__':
    txt, dest = readme_text(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not dest.exists() or dest.read_text() != txt:
            sys.exit("README.md is not what nbs/index.ipynb makes: run `python tools/make_readme.py`")
        print("README.md matches nbs/index.ipynb")
    else:
        dest.write_text(txt); print(f"wrote {dest}")
