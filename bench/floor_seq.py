"""The sequential floor: one bare httpx connection, no threads, exactly the requests of a cycle.

    python bench/floor_seq.py URL --api orgs|v1 [--limit 50] [--token T]

`--api orgs` (the organization era, as `openchoreo.api: orgs` walks it): every page of `/orgs`,
of each org's projects and of each project's components with `limit` and `pagination=cursor`
(following `data.nextCursor`), and after each component page every listed component's detail
with `include=type,workload`, one at a time.

`--api v1` (as `openchoreo.api: v1` walks it): every page of `/namespaces`, then each
namespace's projects, then each namespace's workloads and components before the next one's,
with `limit` (at most 100) and `cursor` (following `pagination.nextCursor`). No token request:
the benchmark fetches the one OAuth2 token before it starts this process and passes it with
`--token`, so that the token request is not part of the measured walk.

Every body is parsed as JSON and discarded. Prints one JSON line:
{"requests": N, "lists": N, "details": N, "components": N}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

# Optional packages a plain `import httpx` loads where they are installed, as in this machine's
# global site-packages, and a fresh install of choreo-ingest lacks: httpx's command-line client
# (click, rich, pygments) and, at the first client, trio (about 0.14 s of CPU together here).
# choreo-ingest hides both (`cli.import_libraries_lightly`); the floor does too, so that the two
# sides compare as they would in a fresh venv rather than the floor paying for them.
for _optional in ("httpx._main", "trio"):
    sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]  # import raises ImportError

import httpx  # noqa: E402

DETAIL_PARAMS = {"include": "type,workload"}
V1_MAX_LIMIT = 100


class Walk:
    def __init__(self, client: httpx.Client, limit: int) -> None:
        self.client = client
        self.limit = limit
        self.lists = 0
        self.details = 0
        self.components = 0

    def get(self, path: str, params: dict[str, Any]) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    # -- the organization era ------------------------------------------------------------------

    def orgs_listing(self, path: str) -> Iterator[list[dict[str, Any]]]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self.limit}
            if cursor is not None:
                params["cursor"] = cursor
            params["pagination"] = "cursor"
            data = self.get(path, params)["data"]
            self.lists += 1
            yield data["items"]
            cursor = data["nextCursor"]
            if not cursor:
                return

    def orgs(self) -> None:
        orgs = [quote(org["name"], safe="") for page in self.orgs_listing("orgs") for org in page]
        projects: list[str] = []
        for org in orgs:
            for page in self.orgs_listing(f"orgs/{org}/projects"):
                projects += [f"orgs/{org}/projects/{quote(p['name'], safe='')}" for p in page]
        for project in projects:
            path = f"{project}/components"
            for page in self.orgs_listing(path):
                for item in page:
                    self.get(f"{path}/{quote(item['name'], safe='')}", DETAIL_PARAMS)
                self.details += len(page)
                self.components += len(page)

    # -- v1 ------------------------------------------------------------------------------------

    def v1_listing(self, path: str) -> Iterator[list[dict[str, Any]]]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": min(self.limit, V1_MAX_LIMIT)}
            if cursor is not None:
                params["cursor"] = cursor
            body = self.get(path, params)
            self.lists += 1
            yield body["items"]
            cursor = (body.get("pagination") or {}).get("nextCursor")
            if not cursor:
                return

    def v1(self) -> None:
        namespaces = [
            quote(item["metadata"]["name"], safe="")
            for page in self.v1_listing("namespaces")
            for item in page
        ]
        for namespace in namespaces:
            for _ in self.v1_listing(f"namespaces/{namespace}/projects"):
                pass
        for namespace in namespaces:
            for kind in ("workloads", "components"):
                for page in self.v1_listing(f"namespaces/{namespace}/{kind}"):
                    if kind == "components":
                        self.components += len(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("url", help="API root including /api/v1")
    parser.add_argument("--api", choices=("orgs", "v1"), required=True)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--token", default=None, help="a bearer token (fetched beforehand)")
    args = parser.parse_args(argv)
    headers = {"Accept": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    base = args.url.rstrip("/") + "/"
    with httpx.Client(base_url=base, headers=headers, limits=limits, timeout=60.0) as client:
        walk = Walk(client, args.limit)
        walk.orgs() if args.api == "orgs" else walk.v1()
    requests = walk.lists + walk.details
    print(
        json.dumps(
            {
                "requests": requests,
                "lists": walk.lists,
                "details": walk.details,
                "components": walk.components,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
