"""Applying a profile to one data set: deid's DicomParser for the header actions, plus what a
recipe cannot say (PS3.15 E.1.1, E.3).

Order: private attributes (E.3.10 safe list) and repeating groups are handled first, so the
parser walks fewer elements; the parser then runs the merged recipe with our ``func:`` hooks
(dummy values, consistent UIDs, cleaning, pseudonyms, shifted dates); then every remaining UID
that is not a well-known class UID is replaced (E.3.9 in spirit: no original instance UID is
left anywhere, nested sequences included), the identity attributes are set and the File Meta
Information is rebuilt from the new SOP Instance UID (deid leaves it stale).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deid.config import DeidRecipe
from deid.dicom.fields import _get_fields_inner
from deid.dicom.parser import DicomParser
from deid.logger import bot
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, UID_dictionary

from vna.deid import clean
from vna.deid.keystore import KeyStore
from vna.deid.profiles import Action, Profile, field_tag
from vna.deid.table import CLEAN_PIXEL_CODE, deid_line, load_table, resolve
from vna.index.attributes import dataset_patient_key

bot.level = 0  # deid's logger: errors only; what matters is reported by us

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.7786.1"
IMPLEMENTATION_VERSION_NAME = "VNA_0_1"
DUMMY_TEXT = "ANONYMOUS"
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE", "UR"})
#: UI attributes naming classes, syntaxes and coding schemes: never instance identity.
CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "ContextGroupExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "CodingSchemeRegistry",
        "RetrieveLocationUID",
        "SpecimenUID_class_placeholder",
    }
)
#: Codes and enumerations inside sequences: structure, not identity.
CODE_KEYWORDS = frozenset(
    {
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "MappingResource",
        "ContextIdentifier",
        "TemplateIdentifier",
        "MappingResourceName",
        "ContextGroupVersion",
        "ValueType",
        "RelationshipType",
        "ContinuityOfContent",
        "GraphicType",
        "GraphicAnnotationUnits",
        "BoundingBoxAnnotationUnits",
        "AnchorPointAnnotationUnits",
        "GraphicLayer",
    }
)
ENHANCED_MARKERS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def is_well_known_uid(value: str) -> bool:
    """A UID defined by the standard (class, syntax, well-known instance): not identifying."""
    return value in UID_dictionary or value.startswith("1.2.840.10008.")


@dataclass
class Result:
    """A de-identified data set and what was done to it."""

    dataset: Dataset
    original_sop_instance_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    pseudonym: str = ""
    uid_map: dict[str, str] = field(default_factory=dict)
    pixels: str = "untouched"  # untouched, cleaned
    warnings: list[str] = field(default_factory=list)


class _Context:
    """The per-object state the ``func:`` hooks need."""

    def __init__(self, engine: Engine, ds: Dataset) -> None:
        self.engine = engine
        self.uids: dict[str, str] = {}
        self.produced: set[str] = set()
        self.to_remove: list[Any] = []
        self.scrubbed: set[int] = set()
        self.offset = 0
        self.pseudonym = ""
        self.identifiers = clean.identifiers_of(ds)

    def uid(self, original: str) -> str:
        original = str(original).strip().rstrip("\x00")
        if not original or original in self.produced or is_well_known_uid(original):
            return original
        new = self.uids.get(original)
        if new is None:
            new = self.engine.keystore.new_uid(self.engine.project, original)
            self.uids[original] = new
            self.produced.add(new)
        return new


class Engine:
    """Applies one composed profile for one project; reuse it for many objects."""

    def __init__(
        self,
        profile: Profile,
        project: str,
        keystore: KeyStore,
        *,
        pseudonym_pattern: str = "{project}-{seq:06d}",
        method_prefix: str = "VNA",
    ) -> None:
        self.profile = profile
        self.project = project
        self.keystore = keystore
        self.pattern = pseudonym_pattern
        self.method_prefix = method_prefix
        self._recipes: dict[tuple[frozenset[tuple[int, str]], frozenset[int]], DeidRecipe] = {}
        self._rows = {row.tag_int: row for row in load_table() if row.tag_int is not None}
        self._keep = {
            t for a in profile.actions if a.action == "KEEP" and (t := field_tag(a.field))
        }
        self.retain_uids = profile.has("retain-uids")
        self.modified_dates = profile.has("retain-long-modified-dates")
        self.full_dates = profile.has("retain-long-full-dates")
        self.needs_patient = self.modified_dates or any(
            a.value == "func:vna_pseudonym" for a in profile.actions
        )

    # -- the whole pass ----------------------------------------------------------------------
    def apply(self, ds: Dataset, *, pixels_cleaned: bool = False) -> Result:
        """De-identify ``ds`` (in place when it was read from a file) and return it with what
        was done."""
        if not isinstance(ds, FileDataset):  # deid's parser needs a hashable FileDataset
            meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            ds = FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128)
        if not isinstance(getattr(ds, "filename", ""), str):
            ds.filename = ""  # read from a stream: deid expects a path or nothing
        original_sop = str(ds.get("SOPInstanceUID", ""))
        ctx = _Context(self, ds)
        if self.needs_patient:
            entry = self.keystore.patient(
                self.project, dataset_patient_key(ds), _identity(ds), self.pattern
            )
            ctx.offset, ctx.pseudonym = entry.date_offset, entry.pseudonym
        remove_private(ds, self.profile)
        remove_repeating_groups(ds, self.profile.has("clean-graphics"))
        self._parse(ds, ctx)
        if not self.retain_uids:
            self._replace_remaining_uids(ds, ctx)
        if not self.full_dates:
            self._replace_remaining_dates(ds, ctx)
        self._set_identity_attributes(ds, pixels_cleaned)
        sync_file_meta(ds)
        self.keystore.record_uids(self.project, ctx.uids)
        return Result(
            dataset=ds,
            original_sop_instance_uid=original_sop,
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            pseudonym=ctx.pseudonym,
            uid_map=dict(ctx.uids),
            pixels="cleaned" if pixels_cleaned else "untouched",
        )

    # -- the deid parser ---------------------------------------------------------------------
    def _recipe(self, ds: Dataset) -> DeidRecipe:
        """The merged recipe, with combined codes re-resolved for this object's IOD."""
        overrides = frozenset(iod_types(ds).items())
        # only the actions on attributes the object has: deid evaluates every action against
        # every field, so a 450-line recipe costs far more than the 30 lines that apply
        present = frozenset(int(e.tag) for e in _walk(ds))
        key = (overrides, present)
        recipe = self._recipes.get(key)
        if recipe is None:
            types = dict(overrides)
            actions = [
                self._adjust(a, types)
                for a in self.profile.actions
                if a.action == "ADD" or (t := field_tag(a.field)) is None or t in present
            ]
            # sequence-level D/C last: their hooks see nested attributes already processed
            actions.sort(key=lambda a: _is_sequence_hook(a))
            deid = {"format": "dicom", "header": [a.as_deid() for a in actions if a.action]}
            recipe = DeidRecipe(deid=[deid])
            if len(self._recipes) > 256:
                self._recipes.clear()
            self._recipes[key] = recipe
        return recipe

    def _adjust(self, action: Action, types: dict[int, str]) -> Action:
        tag = field_tag(action.field)
        if "/" not in action.code or tag is None or tag not in types:
            return action
        row = self._rows[tag]
        resolved = resolve(action.code, types[tag])
        line = deid_line(row, resolved)
        if line.startswith("#"):
            return Action("", action.field, None, action.code)
        verb, _field, *value = line.split(" ", 2)
        return Action(verb, action.field, value[0] if value else None, action.code)

    def _parse(self, ds: Dataset, ctx: _Context) -> None:
        parser = DicomParser(ds, recipe=self._recipe(ds))
        hooks: dict[str, Callable[..., Any]] = {
            "vna_dummy": lambda field, **_: self._dummy(field, ctx),
            "vna_uid": lambda field, **_: self._uid(field, ctx),
            "vna_clean": lambda field, **_: self._clean(field, ctx),
            "vna_pseudonym": lambda **_: ctx.pseudonym or DUMMY_TEXT,
        }
        for name, hook in hooks.items():
            parser.define(name, hook)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # deid prints from some hooks
                parser.parse()
            for dicom_field in ctx.to_remove:
                parser.delete_field(dicom_field)
        finally:
            _get_fields_inner.cache_clear()  # deid caches every data set it saw

    # -- hooks -------------------------------------------------------------------------------
    def _dummy(self, dicom_field: Any, ctx: _Context) -> Any:
        element: DataElement = dicom_field.element
        if element.VR == "SQ":
            return Sequence([self._scrub(item, ctx, "D") for item in element.value or []])
        return dummy_value(element.VR, element.value)

    def _uid(self, dicom_field: Any, ctx: _Context) -> Any:
        value = dicom_field.element.value
        if isinstance(value, list | MultiValue):
            return [ctx.uid(v) for v in value]
        return ctx.uid(value) if value else value

    def _clean(self, dicom_field: Any, ctx: _Context) -> Any:
        """C: keep what is known not to identify; fall back to the basic action when nothing
        is left (D: dummy, Z: empty, X: the attribute is removed)."""
        element: DataElement = dicom_field.element
        vr, value = element.VR, element.value
        if vr == "SQ":
            return Sequence([self._scrub(item, ctx, "C") for item in value or []])
        cleaned = self.clean_value(vr, value, ctx)
        if cleaned not in (None, "", []):
            return cleaned
        row = self._rows.get(int(element.tag))
        fallback = resolve(row.basic, row.type) if row else "X"
        if fallback == "D":
            return dummy_value(vr, value)
        if fallback == "X":
            ctx.to_remove.append(dicom_field)
        return ""

    def clean_value(self, vr: str, value: Any, ctx: _Context) -> Any:
        """A value of similar meaning without identity, or None (PS3.15 E.1.1 C)."""
        if value in (None, ""):
            return None
        if vr in ("DA", "DT"):
            if self.full_dates:
                return value
            return shift_value(vr, value, ctx.offset) if self.modified_dates else None
        if vr == "TM":
            return value if (self.modified_dates or self.full_dates) else None
        if vr == "PN":
            return None
        if vr in TEXT_VRS or vr == "CS":
            values = list(value) if isinstance(value, list | MultiValue) else [value]
            kept = [clean.clean_text(str(v), ctx.identifiers) for v in values]
            kept = [k for k in kept if k]
            if not kept:
                return None
            return kept if len(kept) > 1 else kept[0]
        return value

    def _scrub(self, item: Dataset, ctx: _Context, mode: str) -> Dataset:
        """An item of a sequence with D (dummy) or C (clean) action: attributes without a row
        of their own are dummied or cleaned; rows of the table were already applied."""
        ctx.scrubbed.add(id(item))
        for element in list(item):
            tag = int(element.tag)
            if element.tag.is_private or (tag in self._rows and tag != 0x0040A730):
                continue
            if element.VR == "SQ":
                for sub in element.value or []:
                    self._scrub(sub, ctx, mode)
                continue
            if element.keyword in CODE_KEYWORDS or element.VR not in (
                *TEXT_VRS,
                "PN",
                "DA",
                "DT",
                "TM",
                "UI",
            ):
                continue
            if element.VR == "UI":
                if not self.retain_uids and element.keyword not in CLASS_UID_KEYWORDS:
                    element.value = _map_uids(element.value, ctx)
                continue
            new = self.clean_value(element.VR, element.value, ctx) if mode == "C" else None
            if new in (None, "", []) and element.value not in (None, ""):
                new = dummy_value(element.VR, element.value)
            element.value = new
        return item

    def _replace_remaining_uids(self, ds: Dataset, ctx: _Context) -> None:
        for element in _walk(ds):
            if element.VR != "UI" or element.tag.is_private or element.value in (None, ""):
                continue
            if element.keyword in CLASS_UID_KEYWORDS or int(element.tag) in self._keep:
                continue
            element.value = _map_uids(element.value, ctx)

    def _replace_remaining_dates(self, ds: Dataset, ctx: _Context) -> None:
        """Dates Table E.1-1 does not list (Instance Creation Date, Date of Secondary Capture,
        Verification DateTime...) identify just as well: dummy, or shifted with the modified
        dates option, like the listed ones."""
        for element in _walk(ds, skip=ctx.scrubbed):
            tag = int(element.tag)
            if element.VR not in ("DA", "DT") or element.value in (None, ""):
                continue
            if tag in self._rows or tag in self._keep or element.tag.is_private:
                continue
            new = (
                shift_value(element.VR, element.value, ctx.offset) if self.modified_dates else None
            )
            element.value = new if new not in (None, "", []) else dummy_value(element.VR)

    # -- attributes describing what was done (PS3.15 E.1.1, PS3.3 C.12.1) --------------------
    def _set_identity_attributes(self, ds: Dataset, pixels_cleaned: bool) -> None:
        ds.PatientIdentityRemoved = "YES"
        methods = [f"{self.method_prefix} {self.profile.name} profile"]
        methods += [f"{o}" for o in self.profile.options]
        ds.DeidentificationMethod = [m[:64] for m in methods]
        codes = self.profile.method_codes + ([CLEAN_PIXEL_CODE] if pixels_cleaned else [])
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if self.modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif self.full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        if pixels_cleaned:
            ds.BurnedInAnnotation = "NO"


def _is_sequence_hook(action: Action) -> bool:
    tag = field_tag(action.field)
    if tag is None or action.action != "REPLACE":
        return False
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _map_uids(value: Any, ctx: _Context) -> Any:
    if isinstance(value, list | MultiValue):
        return [ctx.uid(v) for v in value]
    return ctx.uid(value)


def _walk(ds: Dataset, skip: set[int] | None = None) -> Iterator[DataElement]:
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value or []:
                if skip is None or id(item) not in skip:
                    yield from _walk(item, skip)


def iod_types(ds: Dataset) -> dict[int, str]:
    """Types of combined-code attributes that differ from the usual IODs for this object."""
    out: dict[int, str] = {}
    enhanced = any(k in ds for k in ENHANCED_MARKERS)
    wsi = str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS
    structured = "ContentSequence" in ds and "ValueType" in ds
    if enhanced or wsi or structured:
        out[0x00080023] = out[0x00080033] = "1"  # Content Date/Time
    if enhanced or wsi:
        out[0x0008002A] = "1"  # Acquisition DateTime (1, or 1C when ORIGINAL)
        out[0x00181000] = "1"  # Device Serial Number, Enhanced General Equipment
    if "EncapsulatedDocument" in ds:
        out[0x0008002A] = "2"
    return out


def dummy_value(vr: str, original: Any = None) -> Any:
    """One fixed, non-identifying value of the VR (PS3.15 E.1.1 D)."""
    if vr == "DA":
        return DUMMY_DATE
    if vr == "TM":
        return DUMMY_TIME
    if vr == "DT":
        return DUMMY_DATE + DUMMY_TIME
    if vr == "AS":
        return "000Y"
    if vr in ("IS",):
        return "0"
    if vr == "DS":
        return "0"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x00\x00"
    if vr == "UI":
        return original
    if vr == "CS":
        return DUMMY_TEXT[:16]
    if vr in ("SH", "AE"):
        return DUMMY_TEXT[:16]
    return DUMMY_TEXT


_DT = re.compile(r"^(\d{8})(.*)$")


def shift_value(vr: str, value: Any, days: int) -> Any:
    """Dates moved by ``days`` (PS3.15 E.3.6 modified dates); times of day are kept."""
    if isinstance(value, list | MultiValue):
        return [shift_value(vr, v, days) for v in value]
    text = str(value).strip()
    match = _DT.match(text)
    if not match:
        return None
    try:
        day = dt.datetime.strptime(match.group(1), "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return None
    return day.strftime("%Y%m%d") + (match.group(2) if vr == "DT" else "")


def remove_private(ds: Dataset, profile: Profile) -> None:
    """Private attributes go, except the safe list with Retain Safe Private (PS3.15 E.3.10)."""
    safe = {(s.group, s.creator.upper(), s.element) for s in profile.safe_private}
    _remove_private(ds, safe)


def _remove_private(ds: Dataset, safe: set[tuple[int, str, int]]) -> None:
    creators: dict[tuple[int, int], str] = {}
    for element in ds:
        if element.tag.is_private_creator:
            creators[(element.tag.group, element.tag.element)] = str(element.value).strip().upper()
    kept_blocks: set[tuple[int, int]] = set()
    for element in list(ds):
        tag = element.tag
        if element.VR == "SQ" and not tag.is_private:
            for item in element.value or []:
                _remove_private(item, safe)
        if not tag.is_private or tag.is_private_creator:
            continue
        block = (tag.group, tag.element >> 8)
        creator = creators.get(block, "")
        if (tag.group, creator, tag.element & 0xFF) in safe:
            kept_blocks.add(block)
            continue
        del ds[tag]
    for creator_key in creators:
        if creator_key not in kept_blocks:
            del ds[(creator_key[0] << 16) | creator_key[1]]
    for element in list(ds):
        if element.tag.is_private and not element.tag.is_private_creator:
            continue
        if element.tag.group % 2 == 1 and element.tag.element < 0x10:
            del ds[element.tag]  # private group lengths and illegal elements


def remove_repeating_groups(ds: Dataset, clean_graphics: bool) -> None:
    """Curves (50xx) go; overlay data and comments (60xx,3000/4000) go unless Clean Graphics
    keeps ROI overlays (type R), which carry no text (PS3.15 E.3.8)."""
    for element in list(ds):
        group = element.tag.group
        if 0x5000 <= group <= 0x501E and group % 2 == 0:
            del ds[element.tag]
        elif 0x6000 <= group <= 0x601E and group % 2 == 0:
            overlay_type = str(ds.get((group << 16) | 0x0040, DataElement(0, "CS", "")).value)
            if element.tag.element in (0x3000, 0x4000) and not (
                clean_graphics and overlay_type == "R"
            ):
                del ds[element.tag]


def sync_file_meta(ds: Dataset) -> None:
    """A fresh File Meta Information group naming the new SOP Instance (PS3.10 7.1); source
    and sending AE titles and private meta information are not carried over."""
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(
        str(ds.get("SOPClassUID", old.get("MediaStorageSOPClassUID")))
    )
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
    meta.TransferSyntaxUID = old.get("TransferSyntaxUID", UID("1.2.840.10008.1.2.1"))
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def _identity(ds: Dataset) -> dict[str, str]:
    """What re-identification gives back (stored encrypted in the key store only)."""
    return {
        k: str(ds.get(k, "") or "")
        for k in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
    }
