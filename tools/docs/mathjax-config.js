// MathJax 3 configuration for the offline docs site (loaded before assets/vendor/mathjax/tex-svg.js).
// Notebook markdown keeps `$...$` / `$$...$$` as written; code and outputs (<pre>, <code>) are skipped by default.
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: 'tex2jax_ignore|md-search|md-nav', processHtmlClass: 'tex2jax_process'},
  svg: {fontCache: 'global'},
  startup: {typeset: true}
};
