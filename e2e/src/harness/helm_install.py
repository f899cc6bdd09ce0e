#!/usr/bin/env python3
"""Installs the gameshard chart with Helm's own library (helm-sdkpy, as charts/tests does)
into the API server a kubeconfig names, and prints the installed objects as one JSON
list on standard output.

    helm_install.py KUBECONFIG RELEASE NAMESPACE CHART VALUES_JSON

Helm creates the chart's crds/ first (skipping a CRD that exists), then the templates.
Exits 2 when helm-sdkpy is not installed, 1 when Helm refuses.
"""

import asyncio
import json
import sys

try:
    import helm_sdkpy
    import yaml
except ImportError as e:
    print(f"helm_install.py: {e.name} is not installed (scripts/setup installs helm-sdkpy and PyYAML)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    kubeconfig, release, namespace, chart, values = sys.argv[1:6]
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    try:
        result = asyncio.run(
            helm_sdkpy.Install(config).run(
                release, chart, values=json.loads(values), create_namespace=True, wait=False, timeout=120
            )
        )
    except helm_sdkpy.HelmError as e:
        print(f"helm install {release}: {e}", file=sys.stderr)
        return 1
    objects = [o for o in yaml.safe_load_all(result["manifest"]) if o]
    json.dump(objects, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
