"""Request and response bodies of the reference server (pydantic models; they also make the OpenAPI doc)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

# The Twomes name check is anchored only at the start ("TWOMES-D3AD48-OLD" is a valid name).
DEVICE_NAME_PATTERN = r"^TWOMES-[0-9A-F]{6}"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._+-]*$"
SIGNATURE_PATTERN = r"^[0-9a-f]{128}$"
MANIFEST_MAX = 512  # the device refuses a longer manifest (device/twomes/update/signing.py)
TYPE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Latest instant a timestamp may name: 9999-12-31T23:59:59Z.
MAX_UNIX_TIME = 253402300799
MAX_ID = 2**63 - 1  # SQLite's largest integer

DeviceName = Annotated[str, StringConstraints(pattern=DEVICE_NAME_PATTERN, max_length=255)]
ActivationToken = Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=1024)]
_NUMBER_RE = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*$")
_TIMESTAMP_HELP = "unix seconds (a number) or an ISO-8601 time with a time zone"


def _parse_timestamp(value: Any) -> datetime:
    """Unix seconds (a JSON number, or a string of one) or an ISO-8601 time WITH a time zone."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"time without a time zone; expected {_TIMESTAMP_HELP}")
        return _in_range(value)
    if isinstance(value, str) and _NUMBER_RE.match(value):
        if len(value) > 40:
            raise ValueError(f"unix seconds out of range (0..{MAX_UNIX_TIME})")
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= MAX_UNIX_TIME:
            raise ValueError(f"unix seconds out of range (0..{MAX_UNIX_TIME})")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a time; expected {_TIMESTAMP_HELP}") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise ValueError(f"time without a time zone; expected {_TIMESTAMP_HELP}")
        return _in_range(parsed)
    raise ValueError(f"expected {_TIMESTAMP_HELP}")


def _in_range(value: datetime) -> datetime:
    """The time in UTC, if it lies in 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z (else ValueError)."""
    seconds = value.timestamp()
    if not 0 <= seconds <= MAX_UNIX_TIME:
        raise ValueError(
            f"time out of range (1970-01-01T00:00:00Z..9999-12-31T23:59:59Z, unix 0..{MAX_UNIX_TIME})"
        )
    return value.astimezone(UTC)


# Unix seconds or an ISO-8601 string WITH a time zone; a naive time is rejected (422).
Timestamp = Annotated[
    datetime,
    PlainValidator(_parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_UNIX_TIME},
                {"type": "string", "format": "date-time"},
            ],
            "description": "Unix seconds, or an ISO-8601 time with a time zone (a naive time is rejected).",
        }
    ),
]
Version = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ReleaseVersion = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=VERSION_PATTERN)]
ReleaseKind = Literal["bundle", "image"]


def timestamp_seconds(value: datetime) -> float:
    """Unix seconds of a :data:`Timestamp` value."""
    return value.timestamp()


class _Body(BaseModel):
    """A request body: unknown fields are ignored (as FastAPI/Twomes do)."""

    model_config = ConfigDict(extra="ignore")


# ------------------------------------------------------------------------------------ Twomes device API


# New registrations: 16..1024 characters by default (what the device prints); the server's
# `--min-token-length` may lower the minimum to Twomes' 8.
NewActivationToken = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=8, max_length=1024),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 16,
            "maxLength": 1024,
            "description": "At least 16 characters (the server's --min-token-length; 8 on Twomes).",
        }
    ),
]


class DeviceCreate(_Body):
    name: DeviceName = Field(description="`TWOMES-` + 6 upper-case hex digits (checked at the start only).")
    device_type: str = Field(max_length=255, description="Name of an existing device type.")
    activation_token: NewActivationToken


class ActivationRequest(_Body):
    activation_token: ActivationToken


class SessionToken(BaseModel):
    session_token: str


class BuildingLocation(_Body):
    longitude: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    latitude: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]


class TwomesAccountCreate(_Body):
    """`POST /account` (Twomes): everything optional; the location and time zone are accepted, not used."""

    pseudonym: Annotated[int, Field(ge=800000, le=899999)] | None = None
    location: BuildingLocation | None = None
    tz_name: Annotated[str, StringConstraints(max_length=64)] | None = None


class TwomesAccountItem(BaseModel):
    id: int
    pseudonym: int
    activation_token: str = Field(
        description="For `POST /account/activate` (the owner's app gets it by QR code)."
    )
    firebase_url: str = Field(description="Twomes: a Firebase link with the token; here always empty.")


class AccountActivate(_Body):
    activation_token: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class DeviceTypeItem(BaseModel):
    name: str
    display_name: str
    installation_manual_url: str


class PropertyItem(BaseModel):
    name: str
    unit: str = ""


class DeviceTypeWithProperties(DeviceTypeItem):
    properties: list[PropertyItem]


class DeviceItem(BaseModel):
    id: int
    name: str
    device_type: DeviceTypeItem
    created_on: datetime
    activated_on: datetime | None


class DeviceSelf(BaseModel):
    """`GET /device`: the device, its type with the type's properties (also repeated at the top level)."""

    id: int
    name: str
    device_type: DeviceTypeWithProperties
    created_on: datetime
    activated_on: datetime | None
    properties: list[PropertyItem]


class MeasurementValue(_Body):
    timestamp: Timestamp
    value: str = Field(max_length=4096)


class PropertyMeasurementsVariable(_Body):
    property_name: str = Field(max_length=255)
    measurements: list[MeasurementValue]


class MeasurementsUploadVariable(_Body):
    upload_time: Timestamp
    property_measurements: list[PropertyMeasurementsVariable]


class PropertyMeasurementsFixed(_Body):
    property_name: str = Field(max_length=255)
    timestamp: Timestamp = Field(description="Time of the first (`start`) or the last (`end`) measurement.")
    timestamp_type: Literal["start", "end"]
    interval: Annotated[float, Field(gt=0, le=MAX_UNIX_TIME, allow_inf_nan=False)] = Field(
        description="Seconds between two consecutive measurements."
    )
    measurements: list[Annotated[str, StringConstraints(max_length=4096)]]


class MeasurementsUploadFixed(_Body):
    upload_time: Timestamp
    property_measurements: list[PropertyMeasurementsFixed]


class MeasurementsUploadResult(BaseModel):
    server_time: datetime
    size: int = Field(
        description="Measurements in the upload (as Twomes answers), including any already stored: a "
        "measurement with the property and timestamp of a stored one is not stored again."
    )


# ------------------------------------------------------------------------------------------ firmware API


class Release(BaseModel):
    id: int
    version: str
    kind: ReleaseKind
    device_type: str
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Lower-case hex SHA-256 of the file.")
    created_on: datetime
    url: str = Field(description="Download path (device token): `/device/firmware/releases/{id}/image`.")
    manifest: str | None = Field(
        default=None,
        description="The signed release manifest, exact text (canonical JSON: counter, device_type, kind, "
        "sha256, size, version); null for an unsigned release.",
    )
    signature: str | None = Field(
        default=None,
        description="Ed25519 signature of the manifest's UTF-8 bytes, 128 lower-case hex digits.",
    )


class FirmwareTarget(BaseModel):
    release: Release | None


class InstalledFirmware(BaseModel):
    version: str | None
    release_id: int | None
    confirmed_on: datetime | None


class FirmwareConfirm(_Body):
    version: Version


# --------------------------------------------------------------------------------------------- admin API


class AdminToken(BaseModel):
    token: str


class AdminTokenInfo(BaseModel):
    id: int
    created_on: datetime
    revoked_on: datetime | None
    current: bool = Field(description="The token making this request.")


class AccountInfo(BaseModel):
    id: int
    name: str
    created_on: datetime
    token_revoked_on: datetime | None
    devices: int = Field(description="Devices attached to the account.")


class PropertyCreate(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    unit: Annotated[str, StringConstraints(max_length=32)] = ""


class DeviceTypeCreate(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TYPE_NAME_PATTERN)]
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    installation_manual_url: Annotated[str, StringConstraints(max_length=2048)] = ""
    properties: list[PropertyCreate] = Field(default_factory=list, max_length=256)


class DeviceTypeAdmin(DeviceTypeWithProperties):
    target: Release | None


class AccountCreate(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class AccountCreated(BaseModel):
    id: int
    name: str
    session_token: str


class AttachRequest(_Body):
    account_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


class DeviceRename(_Body):
    name: DeviceName


class AdminDevice(BaseModel):
    id: int
    name: str
    device_type: str
    state: Literal["registered", "attached", "activated"]
    account_id: int | None
    created_on: datetime
    activated_on: datetime | None
    installed_version: str | None
    installed_release_id: int | None
    confirmed_on: datetime | None
    last_seen: datetime | None
    target: Release | None = Field(
        description="Effective target: the device's own, else its type's, else null."
    )
    target_source: Literal["device", "device_type"] | None


class Measurement(BaseModel):
    property_name: str
    timestamp: datetime
    value: str


class TargetRequest(_Body):
    release_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID)] | None


class ReleaseForm(_Body):
    """The text fields of the `POST /admin/firmware` multipart body."""

    version: ReleaseVersion
    kind: ReleaseKind
    device_type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    manifest: Annotated[str, StringConstraints(min_length=2, max_length=MANIFEST_MAX)] | None = None
    signature: Annotated[str, StringConstraints(pattern=SIGNATURE_PATTERN)] | None = None


class ErrorDetail(BaseModel):
    detail: str
