"""HTTP request bodies of the public API (CONTRACT.md, "HTTP API")."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from schemas.phone import InvalidPhone, normalise

District = Literal["동구", "서구", "남구", "북구", "광산구"]
Skill = Literal["infant", "hospital", "special_needs"]
Lang = Literal["ko", "en"]


def _phone(value: str) -> str:
    try:
        return normalise(value)
    except InvalidPhone as exc:
        raise PydanticCustomError("invalid_phone", "{reason}", {"reason": str(exc)}) from exc


# No min_length: a too-short number is an invalid_phone, not a generic invalid_input.
Phone = Annotated[str, Field(max_length=32), AfterValidator(_phone)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """NUL is no text (PostgreSQL cannot store it): 422 on every backend alike."""
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and "\x00" in item:
                raise PydanticCustomError("invalid_input", "NUL characters are not allowed")
        return value


class Point(Body):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class CarerIn(Body):
    name: Name
    phone: Phone
    districts: list[District] = Field(min_length=1)
    skills: list[Skill] = []
    home: Point | None = None
    center_id: str | None = Field(default=None, max_length=50)
    lang: Lang = "ko"


class DutyIn(Body):
    on_duty: bool


class Guardian(Body):
    name: Name
    phone: Phone


class ChildIn(Body):
    name: Name
    birth_date: date
    disability: bool = False


class Consent(Body):
    child_data: bool
    health_data: bool = False


class FamilyIn(Body):
    guardian: Guardian
    children: list[ChildIn] = Field(min_length=1, max_length=10)
    district: District
    address: str | None = Field(default=None, max_length=300)
    pickup_guardians: list[Name] = Field(default=[], max_length=10)
    consent: Consent
    lang: Lang = "ko"


class Location(Body):
    center_id: str | None = Field(default=None, max_length=50)
    hospital: str | None = Field(default=None, max_length=100)
    ward: str | None = Field(default=None, max_length=100)
    district: District | None = None
    address: str | None = Field(default=None, max_length=300)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class RequestIn(Body):
    service: str = Field(min_length=1, max_length=40)
    family_id: str = Field(min_length=1, max_length=64)
    child_id: str = Field(min_length=1, max_length=64)
    start: AwareDatetime
    end: AwareDatetime
    location: Location = Location()
    notes: str | None = Field(default=None, max_length=1000)


class CancelIn(Body):
    reason: str = Field(default="", max_length=500)


class AssignIn(Body):
    carer_id: str = Field(min_length=1, max_length=64)


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=1000)


class ConsoleSmsIn(Body):
    """A reply typed on the console's simulated phone (console SMS gateway only)."""

    from_: Phone = Field(alias="from")
    body: str = Field(max_length=1600)


class TokenIn(Body):
    name: Name
    role: Literal["dispatcher", "intake", "admin"]


class ShiftIn(Body):
    """Centre mode: a carer on shift at a centre (their group's hours)."""

    carer_id: str = Field(min_length=1, max_length=64)
    center_id: str = Field(min_length=1, max_length=50)
    start: AwareDatetime
    end: AwareDatetime
