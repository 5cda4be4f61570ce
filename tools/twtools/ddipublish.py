"""`twomes release --ddi URL`: publish a release on a hawkBit DDI server instead of the reference server
(docs/hawkbit.md). Two management APIs:

* ``--ddi-api goosebit`` (default; tested against a real gooseBit): the release file is wrapped in an
  SWUpdate archive (gooseBit takes nothing else), uploaded (``PUT /api/v1/software``) and, with
  ``--rollout FEED``, rolled out to that feed's targets (``PUT /api/v1/rollouts``).
* ``--ddi-api hawkbit`` (Eclipse hawkBit's Management API as documented; NOT tested here - no hawkBit
  runs in this project's tests): a software module with the release file as its artifact, a
  distribution set holding it and, with ``--rollout FILTER``, a rollout to the targets matching that
  target filter query (one group, started at once); ``--assign ID`` assigns it to one target instead.

Credentials: ``--ddi-user`` / ``--ddi-password`` or TWOMES_DDI_USER / TWOMES_DDI_PASSWORD (gooseBit:
a user with software and rollout write permission; hawkBit: basic auth of a management user).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx


class PublishError(Exception):
    pass


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hawkBit DDI server (instead of --server)")
    g.add_argument("--ddi", metavar="URL", help="publish on this DDI server's management API")
    g.add_argument("--ddi-api", choices=("goosebit", "hawkbit"), default="goosebit", help="its API")
    g.add_argument("--ddi-user", default=os.environ.get("TWOMES_DDI_USER"), help="or TWOMES_DDI_USER")
    g.add_argument(
        "--ddi-password", default=os.environ.get("TWOMES_DDI_PASSWORD"), help="or TWOMES_DDI_PASSWORD"
    )
    g.add_argument(
        "--rollout",
        metavar="FEED|FILTER",
        help="roll it out: gooseBit feed, or hawkBit target filter query (e.g. 'name==TWOMES-*')",
    )
    g.add_argument("--assign", metavar="CONTROLLER_ID", help="hawkBit: assign it to this one target")


def signed_artifact(manifest: str | None, signature: str | None) -> bytes | None:
    """The *.manifest.json that travels with a release over DDI: the signed manifest and its signature."""
    if manifest is None or signature is None:
        return None
    return json.dumps({"manifest": manifest, "signature": signature}, separators=(",", ":")).encode()


def publish(
    args: argparse.Namespace,
    path: Path,
    version: str,
    kind: str,
    manifest: str | None = None,
    signature: str | None = None,
) -> str:
    """Publish `path` (a bundle or an app image) as `version`, with its signed manifest when given;
    returns what was done, in words."""
    signed = signed_artifact(manifest, signature)
    if not args.ddi_user or not args.ddi_password:
        raise PublishError("--ddi needs --ddi-user and --ddi-password (or TWOMES_DDI_USER/_PASSWORD)")
    fname = f"twomes-{version}.{'bin' if kind == 'image' else 'bundle'}"
    try:
        if args.ddi_api == "goosebit":
            return _goosebit(args, path, version, fname, signed)
        return _hawkbit(args, path, version, fname, signed)
    except httpx.TransportError as e:
        raise PublishError(f"no answer from {args.ddi}: {e}") from None


def _goosebit(args: argparse.Namespace, path: Path, version: str, fname: str, signed: bytes | None) -> str:
    from twtools.goosebit import GooseBitClient, GooseBitError, make_swu

    try:
        client = GooseBitClient.login(args.ddi, args.ddi_user, args.ddi_password)
        try:
            data = make_swu(path.read_bytes(), fname, version, args.device_type, signed)
            sw = client.upload(data, f"twomes-{version}.swu")
            words = f"published software {sw} ({fname} in an SWUpdate archive) on {args.ddi}"
            if args.rollout:
                rid = client.rollout(f"twomes-{version}", args.rollout, sw)
                words += f"; rollout {rid} to feed {args.rollout!r}"
            return words
        finally:
            client.close()
    except GooseBitError as e:
        raise PublishError(str(e)) from None


def _hawkbit(args: argparse.Namespace, path: Path, version: str, fname: str, signed: bytes | None) -> str:
    base = args.ddi.rstrip("/") + "/rest/v1"
    with httpx.Client(auth=(args.ddi_user, args.ddi_password), timeout=60) as http:

        def ok(r: httpx.Response) -> Any:
            if r.status_code // 100 != 2:
                raise PublishError(
                    f"hawkBit answered {r.status_code} to {r.request.url.path}: {r.text[:300]}"
                )
            return r.json() if r.content else None

        sm = ok(
            http.post(
                base + "/softwaremodules",
                json=[{"name": "twomes", "version": version, "type": "os", "vendor": "twomes"}],
            )
        )[0]["id"]
        with open(path, "rb") as f:
            ok(http.post(f"{base}/softwaremodules/{sm}/artifacts", files={"file": (fname, f)}))
        if signed is not None:
            ok(
                http.post(
                    f"{base}/softwaremodules/{sm}/artifacts",
                    files={"file": (fname + ".manifest.json", signed)},
                )
            )
        ds = ok(
            http.post(
                base + "/distributionsets",
                json=[{"name": "twomes", "version": version, "type": "os", "modules": [{"id": sm}]}],
            )
        )[0]["id"]
        words = f"published distribution set {ds} (software module {sm}, {fname}) on {args.ddi}"
        if args.assign:
            ok(http.post(f"{base}/distributionsets/{ds}/assignedTargets", json=[{"id": args.assign}]))
            words += f"; assigned to {args.assign}"
        if args.rollout:
            ro = ok(
                http.post(
                    base + "/rollouts",
                    json={
                        "name": f"twomes-{version}",
                        "distributionSetId": ds,
                        "targetFilterQuery": args.rollout,
                        "amountGroups": 1,
                    },
                )
            )["id"]
            ok(http.post(f"{base}/rollouts/{ro}/start"))
            words += f"; rollout {ro} started for {args.rollout!r}"
        return words
