"""Injecting the sidecars into Pod templates: `sidecars inject` and the admission webhook `sidecars run injector`.

The logic is pure functions over parsed YAML or JSON (`inject_template`, `inject_documents`); the
command reads and writes files around them, the webhook answers AdmissionReviews with them.
"""

from sidecars.injector.errors import InjectionError, Problem
from sidecars.injector.inject import Options, Outcome, inject_template
from sidecars.injector.workloads import inject_document, inject_documents

__all__ = ["InjectionError", "Options", "Outcome", "Problem", "inject_document", "inject_documents", "inject_template"]
