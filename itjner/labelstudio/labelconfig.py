"""A project's labeling config, read for the ML backend: which `<Labels>` tag names the tweet's text, which data
keys hold the text and the image, and which of its labels are ITJNER's PER/LOC/ORG/MISC (matched by name)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

ALIASES = {
    "PER": ("per", "person", "people", "persons", "b-per"),
    "LOC": ("loc", "location", "locations", "place", "gpe", "geo"),
    "ORG": ("org", "organization", "organisation", "organizations", "organisations", "company"),
    "MISC": ("misc", "miscellaneous", "other", "others"),
}
TEXT_TAGS = ("text", "hypertext", "paragraphs")


class LabelConfigError(ValueError):
    """The labeling config cannot be served; the message says what it lacks."""


@dataclass
class ProjectConfig:
    from_name: str  # the <Labels> tag
    to_name: str  # the <Text> tag it labels
    text_key: str  # data key of the text ($text -> "text")
    image_key: str | None  # data key of the first <Image>, if any
    labels: dict[str, str] = field(default_factory=dict)  # config label -> ITJNER type

    def label_for(self, etype: str) -> str | None:
        """The config's label for an ITJNER type (the first one mapped to it)."""
        for name, mapped in self.labels.items():
            if mapped == etype:
                return name
        return None


def map_label(name: str) -> str | None:
    low = name.strip().lower()
    for etype, names in ALIASES.items():
        if low in names:
            return etype
    return None


def parse_label_config(xml: str) -> ProjectConfig:
    if not xml or not xml.strip():
        raise LabelConfigError("the project has no labeling config")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise LabelConfigError(f"the labeling config is not valid XML ({err})") from None
    tags = list(root.iter())
    texts = {t.get("name"): t for t in tags if t.tag.lower() in TEXT_TAGS and t.get("name")}
    image = next((t for t in tags if t.tag.lower() == "image" and (t.get("value") or "").startswith("$")), None)
    problems = []
    for labels in (t for t in tags if t.tag.lower() == "labels"):
        target = texts.get(labels.get("toName"))
        if target is None:
            problems.append(f"<Labels name={labels.get('name')!r}> does not label a <Text>")
            continue
        mapping = {}
        for child in labels:
            value = child.get("value") or child.get("alias")
            if child.tag.lower() == "label" and value and map_label(value):
                mapping[value] = map_label(value)
        if not mapping:
            problems.append(f"none of the labels of <Labels name={labels.get('name')!r}> is a person, location, "
                            "organisation or miscellaneous label (PER/LOC/ORG/MISC or their names)")
            continue
        value = target.get("value") or ""
        if not value.startswith("$"):
            problems.append(f"<{target.tag} name={target.get('name')!r}> does not read a task field ($...)")
            continue
        return ProjectConfig(labels.get("name"), target.get("name"), value[1:],
                             image.get("value")[1:] if image is not None else None, mapping)
    detail = "; ".join(problems) or "it has no <Labels> tag for a <Text> tag"
    raise LabelConfigError("ITJNER tags named entities in a text: the labeling config needs a <Labels> tag with "
                           f"PER/LOC/ORG/MISC labels on a <Text> tag ({detail})")
