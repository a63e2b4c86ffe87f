"""Start-up time of the dashboard's processes."""
from __future__ import annotations

import sys


def skip_iri_grammar() -> None:
    """Leave out jsonschema's optional 'iri' string-format check, unless something has loaded it already.

    jsonschema imports rfc3987_syntax when it is installed (Jupyter's packages install it), and that module
    compiles an Earley grammar at import: 1.4 s on 2 cores, paid by the Voila server (nbconvert) and by every
    kernel that shows a plotly FigureWidget (plotly -> nbformat -> jsonschema). No notebook schema uses the
    'iri' format, so nothing here validates it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: `import` raises ImportError

