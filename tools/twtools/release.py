"""`twomes release --version V`: build an app bundle (version stamped) or check an ESP32 app image
(``--image FILE``), and optionally publish it on a server and make it the device type's target
(``--target``): what the device's OTA will install next.

The bundle is by default a ROMFS image of the app (build.build_romfs), the form a board installs that
runs its app from its "romfs" partition, as the firmware ships (into the partition's inactive half;
docs/ota.md). ``--mpy``: the ``.mpy`` overlay (build.build_bundle) for boards that run the app from
``.mpy`` files in /lib (the development mode); on a ROMFS board such a bundle runs from the heap
(docs/heap.md). Both are published as kind ``bundle``: the device tells the two forms apart by their
first bytes, and a device type's fleet gets the form its boards run.

A merged ``firmware.bin`` given as ``--image`` is not what OTA writes into an app slot: its app part is
cut out (from the partition table) and published instead, and the user is told so.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from twtools import esp32image, keys, term
from twtools.adminargs import AdminArgsError, add_admin_options, admin_client, server_problem
from twtools.build import BUILD_DIR, build_bundle, build_romfs

DEFAULT_TYPE = "Generic-Test"


class ReleaseError(Exception):
    pass


class ServerFailed(ReleaseError):
    """The server refused or failed the publication: exit 1 (a file or option problem is exit 2)."""


def prepare_image(path: Path, version: str, out: Path | None) -> tuple[Path, str]:
    """Check an image for OTA; returns (file to publish, description). A merged image's app is cut out."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReleaseError(f"cannot read {path}: {e.strerror}") from None
    try:
        fw = esp32image.inspect_firmware(data)
    except esp32image.ImageError as e:
        raise ReleaseError(f"{path} is not an ESP32 app image: {e}") from None
    app = fw.app
    assert app is not None and app.app is not None
    what = f"{fw.chip} app image, {app.app.project_name} {app.app.version}, {app.length} bytes"
    if app.app.version != version:
        # the device compares the image's own version with the release's and refuses a mismatch (it
        # would otherwise install it again at every check): such a release could never be installed
        raise ReleaseError(
            f"the image says version {app.app.version!r} but the release is {version!r}: devices refuse "
            f"an image whose own version differs; build the image with version {version!r} (or release "
            f"it as {app.app.version!r})"
        )
    if fw.kind == "merged":
        start = fw.app_slots[0].offset if fw.app_slots else next(p.offset for p in fw.partitions if p.is_app)
        start -= fw.flash_offset
        dest = out or BUILD_DIR / "release" / f"{path.stem}-app.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data[start : start + app.length])
        print(f"{path.name} is a merged flash image; OTA installs only its app part: wrote {dest}")
        return dest, what
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data[: app.length])
        return out, what
    return path, what


def release(args: argparse.Namespace) -> int:
    version = args.version
    if args.image and (args.romfs or args.mpy):
        raise ReleaseError(
            "--romfs/--mpy make an app bundle; --image publishes a firmware image: give one of them"
        )
    if args.romfs and args.mpy:
        raise ReleaseError("--romfs (the default) and --mpy are two forms of a bundle: give one of them")
    if args.image:
        path, what = prepare_image(Path(args.image), version, Path(args.out) if args.out else None)
        kind = "image"
        size = path.stat().st_size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    elif args.mpy:
        path = Path(args.out) if args.out else BUILD_DIR / "release" / f"twomes-{version}.bundle"
        size, digest = build_bundle(path, version)
        kind = "bundle"
        what = f"app bundle {version} (.mpy overlay, for boards that run the app from /lib)"
    else:
        path = Path(args.out) if args.out else BUILD_DIR / "release" / f"twomes-{version}.romfs"
        size, digest = build_romfs(path, version)
        kind = "bundle"
        what = f"app bundle {version} (ROMFS image)"
    print(f"{what}: {path} ({size} bytes, sha256 {digest})")
    key = keys.signing_from_args(args)
    manifest = signature = None
    if key is not None:
        manifest, signature = keys.sign_file(key, path, args.device_type, kind, version, args.counter)
        print(f"signed manifest (key {keys.public_hex(key)[:16]}...): {manifest}")
    else:
        print(
            "unsigned: devices with release_keys in their config refuse it (sign with --key FILE --counter N)"
        )
    if args.ddi:  # a hawkBit DDI server instead of the reference server (docs/hawkbit.md)
        from twtools.ddipublish import PublishError, publish

        try:
            print(publish(args, path, version, kind, manifest, signature))
        except PublishError as e:
            raise ReleaseError(str(e)) from None
        return 0
    if not args.server:
        if args.target:
            raise ReleaseError("--target needs --server (and an admin token)")
        print("not published (no --server); `twomes release ... --server URL --target` publishes it")
        return 0
    client = admin_client(args)
    from twtools.server.client import ServerError

    try:
        rel = client.publish(path, version, kind, args.device_type, manifest, signature)
        print(
            f"published release {rel['id']}: {rel['device_type']} {rel['version']} ({rel['kind']}) on {client.url}"
        )
        if rel["sha256"] != digest:
            raise ServerFailed(f"the server stored sha256 {rel['sha256']}, not {digest}: upload damaged?")
        if args.target:
            client.set_type_target(args.device_type, rel["id"])
            print(
                f"release {rel['id']} is now the target of {args.device_type}: devices of that type install it"
            )
    except ServerError as e:
        words = server_problem(e, client.url)
        if words:
            raise ServerFailed(words) from None
        if e.status == 409:
            raise ServerFailed(
                f"{e.detail}: a published version never changes; release a new version"
            ) from None
        if e.detail.startswith("Unknown device type"):
            raise ServerFailed(
                f"{e.detail} on {client.url}; give --device-type with a type the server has"
            ) from None
        raise ServerFailed(f"the server refused the release: {e.status} {e.detail}") from None
    except Exception as e:
        words = server_problem(e, client.url)
        if words:
            raise ServerFailed(words) from None
        raise
    finally:
        client.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return release(args)
    except ServerFailed as e:
        term.error(str(e))
        return 1
    except (ReleaseError, AdminArgsError, keys.SigningError) as e:
        term.error(str(e))
        return 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "release",
        help="build an app bundle (or check a firmware image), publish it, make it the target",
        description="Without --image: compile device/ into an app bundle stamped with --version, a "
        "ROMFS image (boards that run the app from their romfs partition, as it ships) or with --mpy an "
        ".mpy overlay (boards that run it from /lib). With --image: check an ESP32 app image for OTA. "
        "With --server: publish it; with --target: make it the device type's target release.",
    )
    p.add_argument("--version", required=True, help="release version, e.g. 1.2.0 (stamped into the bundle)")
    add_admin_options(p)
    p.add_argument("--target", action="store_true", help="make it the target release of the device type")
    p.add_argument(
        "--image", metavar="FILE", help="publish this ESP32 app image (kind image) instead of a bundle"
    )
    p.add_argument(
        "--romfs",
        action="store_true",
        help="make the bundle a ROMFS image (the default: boards that run the app from their romfs partition)",
    )
    p.add_argument(
        "--mpy",
        action="store_true",
        help="make the bundle an .mpy overlay (boards that run the app from .mpy files in /lib)",
    )
    p.add_argument("--device-type", default=DEFAULT_TYPE, help=f"device type (default {DEFAULT_TYPE})")
    p.add_argument("--out", metavar="FILE", help="where to write the bundle (or the image's app part)")
    keys.add_signing_options(p)
    from twtools.ddipublish import add_options

    add_options(p)
    p.set_defaults(func=run)
