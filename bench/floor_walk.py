"""The physical floor: a bare httpx walk making exactly the requests a choreo-ingest cycle makes.

    python bench/floor_walk.py URL [--limit 50] [--concurrency 5] [--token T]

Lists organizations, then each org's projects, then each project's components, page by page
with `limit` and `pagination=cursor` (following `nextCursor`), and fetches every listed
component's detail with `include=type,workload` through `concurrency` threads, one page of
details at a time, as choreo-ingest does. Every body is parsed as JSON and discarded. Prints one
JSON line: {"requests": N, "orgs": N, "projects": N, "components": N}.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

# As in bench/floor_seq.py: hide what a plain `import httpx` loads where it is installed (httpx's
# command-line client, trio) and a fresh install of choreo-ingest lacks, as choreo-ingest does.
for _optional in ("httpx._main", "trio"):
    sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]  # import raises ImportError

import httpx  # noqa: E402

DETAIL_PARAMS = {"include": "type,workload"}


class FloorWalk:
    def __init__(self, client: httpx.Client, limit: int, concurrency: int) -> None:
        self.client = client
        self.limit = limit
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.requests = 0
        self.counts = {"orgs": 0, "projects": 0, "components": 0}

    def get(self, path: str, params: dict[str, Any]) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()["data"]

    def listing(self, path: str) -> Any:
        """Yield each page's items, following nextCursor until it is empty."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self.limit}
            if cursor is not None:
                params["cursor"] = cursor
            params["pagination"] = "cursor"
            data = self.get(path, params)
            self.requests += 1
            yield data["items"]
            cursor = data["nextCursor"]
            if not cursor:
                return

    def walk(self) -> None:
        orgs = [org["name"] for page in self.listing("orgs") for org in page]
        self.counts["orgs"] = len(orgs)
        projects = []
        for org in orgs:
            for page in self.listing(f"orgs/{quote(org, safe='')}/projects"):
                projects += [(org, project["name"]) for project in page]
        self.counts["projects"] = len(projects)
        for org, project in projects:
            path = f"orgs/{quote(org, safe='')}/projects/{quote(project, safe='')}/components"
            for page in self.listing(path):
                details = [f"{path}/{quote(item['name'], safe='')}" for item in page]
                for _ in self.pool.map(self.detail, details):
                    pass
                self.requests += len(details)
                self.counts["components"] += len(details)

    def detail(self, path: str) -> Any:
        return self.get(path, DETAIL_PARAMS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("url", help="API root including /api/v1")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    headers = {"Accept": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    with httpx.Client(base_url=args.url.rstrip("/") + "/", headers=headers, limits=limits) as c:
        walk = FloorWalk(c, args.limit, args.concurrency)
        walk.walk()
        walk.pool.shutdown()
    print(json.dumps({"requests": walk.requests, **walk.counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
