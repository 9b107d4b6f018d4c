"""The stand-in's world: people, categories, list pages and portrait files.

Deterministic for a seed. Portraits are real photographs that ship inside installed packages
(see wikifaces.samples for each file's licence), varied per person (crop, flip, brightness,
size) so that every file has its own bytes; a few people share a picture, as real pages do.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from wikifaces.samples import available_photos, load_rgb

FIRST = (
    "Ada", "Alan", "Barbara", "Claude", "Dorothy", "Edsger", "Frances", "Grace", "Hedy", "Ivan",
    "Joan", "Karen", "Leslie", "Margaret", "Niklaus", "Ole", "Radia", "Sophie", "Tim", "Vint",
    "Wendy", "Xavier", "Yvonne", "Zhores", "Anita", "Bjarne", "Cynthia", "Donald", "Elaine",
    "Fernando", "Gordon", "Hal", "Irene", "Jean", "Katherine", "Lynn", "Marvin", "Nancy", "Olga",
    "Peter",
)
LAST = (
    "Abbott", "Brennan", "Castillo", "Dalton", "Eriksen", "Fontaine", "Garibaldi", "Holm",
    "Iversen", "Jablonski", "Kovacs", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quist", "Rinaldi", "Sandoval", "Tanaka", "Ueda", "Varga", "Whitlock", "Xu", "Yilmaz",
    "Zeller", "Achebe", "Bauer", "Costa", "Dimitrov", "Engel", "Fischer", "Gallo", "Haas", "Ibsen",
    "Jensen",
)

HOSTILE_TITLE = "Eve O'Hara/../../etc/passwd"
HOSTILE_ARTIST = "Mallory <script>alert('wikifaces')</script> & Sons"
ARTISTS = (
    '<a href="//commons.wikimedia.org/wiki/User:{u}" title="User:{u}">{u}</a>',
    '<span class="fn value"><a href="https://www.flickr.com/people/{u}" class="external text">{u}</a></span>',
    "Unknown author<sup>?</sup>",
    '<bdi><a href="https://www.wikidata.org/wiki/Q{n}" class="extiw">{u} &amp; Sons Studio</a></bdi>',
)
LICENCES = (
    ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0", True),
    ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0", True),
    ("CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0", True),
    ("Public domain", None, False),
    ("CC0", "http://creativecommons.org/publicdomain/zero/1.0/deed.en", False),
)


@dataclass
class FileInfo:
    name: str  # "Grace_Hopper.jpg": the file page title without "File:", underscores
    photo: str  # id in wikifaces.samples
    width: int
    height: int
    licence: str
    licence_url: str | None
    attribution_required: bool
    artist_html: str
    credit_html: str
    nonfree: bool = False
    crop: tuple[float, float, float] = (0.0, 0.0, 1.0)  # x, y offsets and side as fractions
    flip: bool = False
    gain: float = 1.0
    mime: str = "image/jpeg"  # as imageinfo declares it
    size: int = 0  # bytes of the original, as imageinfo declares it (0: not said)

    @property
    def title(self) -> str:
        return "File:" + self.name.replace("_", " ")


@dataclass
class Person:
    title: str
    pageid: int
    qid: str
    birth_year: int | None
    image: str | None  # FileInfo.name
    human: bool = True


@dataclass
class Corpus:
    people: list[Person]
    files: dict[str, FileInfo]  # by name
    categories: dict[str, list[str]]  # "Category:X" -> member titles (pages and "Category:..." subcats)
    redirects: dict[str, str]  # title -> target title
    disambiguations: set[str]
    list_pages: dict[str, str] = field(default_factory=dict)  # title -> article HTML
    other_pages: dict[str, tuple[int, str]] = field(default_factory=dict)  # title -> (pageid, qid), not people

    @cached_property
    def by_title(self) -> dict[str, Person]:
        return {p.title: p for p in self.people}

    @cached_property
    def pageids(self) -> dict[int, str]:
        out = {p.pageid: p.title for p in self.people}
        out.update({pid: t for t, (pid, _) in self.other_pages.items()})
        return out

    def page(self, title: str) -> dict | None:
        """The page record the API would return for a canonical title, or None if missing."""
        if title in self.by_title:
            p = self.by_title[title]
            return {"pageid": p.pageid, "qid": p.qid, "image": p.image}
        if title in self.other_pages:
            pid, qid = self.other_pages[title]
            return {"pageid": pid, "qid": qid, "image": None, "disambiguation": title in self.disambiguations}
        if title in self.list_pages:
            return {"pageid": 900_000 + sorted(self.list_pages).index(title), "qid": None, "image": None}
        return None

    def render(self, name: str, width: int | None = None) -> bytes:
        """JPEG bytes of a file at its original size, or scaled to `width`."""
        info = self.files[name]
        img = _original(info.photo, info.width, info.height, info.crop, info.flip, info.gain)
        if width is not None and width < info.width:
            h = max(1, round(info.height * width / info.width))
            img = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        return buf.tobytes()


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _original(photo: str, width: int, height: int, crop: tuple[float, float, float], flip: bool,
              gain: float) -> np.ndarray:
    if photo not in _PHOTO_CACHE:
        path = dict((p.id, path) for p, path in available_photos(demo_only=False))[photo]
        _PHOTO_CACHE[photo] = load_rgb(path)
    src = _PHOTO_CACHE[photo]
    h, w = src.shape[:2]
    side_h, side_w = int(h * crop[2]), int(w * crop[2])
    y, x = int((h - side_h) * crop[1]), int((w - side_w) * crop[0])
    img = src[y : y + side_h, x : x + side_w]
    if flip:
        img = img[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(img), (width, height),
                     interpolation=cv2.INTER_CUBIC if width > img.shape[1] else cv2.INTER_AREA)
    if gain != 1.0:
        img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return img


def build_corpus(people: int = 60, seed: int = 0, all_photos: bool = False) -> Corpus:
    """A deterministic world of `people` people (at least 12) with the awkward cases real
    Wikipedia has: redirects, a redirect loop, disambiguation pages, people without a lead image,
    a non-free portrait, a lead image that shows no face, category cycles, a list page full of
    links that are not people. `all_photos` draws portraits from every registered photograph
    present (wheel and Debian data included), not only the default set of pip dependencies."""
    if people < 12:
        raise ValueError("the stand-in needs at least 12 people")
    rng = random.Random(seed)
    face_photos = available_photos(faces=True, demo_only=not all_photos)
    other_photos = available_photos(faces=False, demo_only=not all_photos)
    if not face_photos:
        raise RuntimeError("no packaged photographs with faces are installed (scikit-image, matplotlib)")
    sizes = {p.id: load_rgb(path).shape[:2] for p, path in face_photos + other_photos}

    pairs = [f"{f} {surname}" for f in FIRST for surname in LAST]
    rng.shuffle(pairs)
    names = pairs[:people]
    k = 0
    while len(names) < people:  # more people than pairs: middle initials
        first, last = pairs[k % len(pairs)].split()
        names.append(f"{first} {chr(65 + (k // len(pairs)) % 26)}. {last}")
        k += 1
    names.sort()

    files: dict[str, FileInfo] = {}
    persons: list[Person] = []
    for i, name in enumerate(names):
        pageid = 10_000 + i * 7
        qid = f"Q{700_000 + i * 13}"
        birth = rng.choice([None, *range(1815, 2001, 3)]) if i % 9 else 1840 + i % 50
        image: str | None = None
        if i % 10 != 3:  # about one in ten has no lead image
            photo = rng.choice(other_photos if (i % 17 == 5 and other_photos) else face_photos)[0]
            h, w = sizes[photo.id]
            crop_side = rng.uniform(0.8, 1.0)
            scale = rng.choice([0.9, 1.6, 2.5, 3.2])  # originals from smaller than a thumb to large
            ow = int(w * crop_side * scale)
            oh = int(h * crop_side * scale)
            lic = LICENCES[i % len(LICENCES)]
            user = f"{rng.choice(LAST)}{rng.randint(1, 99)}"
            image = f"{name.replace(' ', '_')}_({1950 + i % 70}).jpg"
            files[image] = FileInfo(
                name=image, photo=photo.id, width=ow, height=oh, licence=lic[0], licence_url=lic[1],
                attribution_required=lic[2],
                artist_html=(ARTISTS[i % len(ARTISTS)].format(u=user, n=1000 + i) if i % 13 != 7 else
                             f'<a href="javascript:alert(1)">{html.escape(HOSTILE_ARTIST)}</a>'
                             '<script>alert("not text")</script>'),
                credit_html=f'<span class="int-own-work" lang="en">Own work</span> ({photo.credit})',
                crop=(rng.random(), rng.random(), crop_side), flip=rng.random() < 0.5,
                gain=rng.uniform(0.9, 1.1),
            )
        persons.append(Person(name, pageid, qid, birth, image))

    # Untrusted text as a hostile editor could write it: path pieces in a title ("/" and ".." are
    # legal in titles) and its file name, markup in a licence; above, every 13th artist field has a
    # script as literal text (escaped in Commons' HTML, so "<script>" in the extracted text) next to
    # real markup.
    if len(persons) > 8 and persons[7].image and persons[8].image:
        p = persons[7]
        f = files.pop(p.image)
        p.title = HOSTILE_TITLE
        f.name = p.image = "Eve_O'Hara_.._.._etc_(1957).jpg"
        files[f.name] = f
        g = files[persons[8].image]
        g.licence = g.licence + '<img src=x onerror="alert(2)">'

    # A non-free portrait (a local file on the wiki, not on Commons), and two people sharing one picture.
    nonfree_person = persons[4]
    if nonfree_person.image:
        f = files[nonfree_person.image]
        f.nonfree, f.licence, f.licence_url, f.attribution_required = True, "Fair use", None, False
    persons[6].image = persons[5].image or persons[6].image

    redirects = {
        f"{persons[0].title.split()[0]} Q. {persons[0].title.split()[1]}": persons[0].title,
        f"{persons[1].title} (scientist)": persons[1].title,
        "Loop Alpha": "Loop Beta",
        "Loop Beta": "Loop Alpha",
    }
    other = {
        "United States": (5_000_001, "Q30"),
        "Turing Award": (5_000_002, "Q185667"),
        "Computer science": (5_000_003, "Q21198"),
        "John Smith": (5_000_004, "Q245962"),
    }
    disambiguations = {"John Smith"}

    # Categories: a root with two subcategories, a cycle between the subcategories, an empty one.
    half = len(persons) // 2
    categories = {
        "Category:Stand-in people": [p.title for p in persons[:4]]
        + ["Category:Stand-in scientists", "Category:Stand-in artists", "Category:Stand-in empty"],
        "Category:Stand-in scientists": [p.title for p in persons[4:half]] + ["Category:Stand-in artists"],
        "Category:Stand-in artists": [p.title for p in persons[half:]] + ["Category:Stand-in scientists"],
        "Category:Stand-in empty": [],
        "Category:Stand-in everyone": [p.title for p in persons],  # one flat category, for benchmarks
    }
    corpus = Corpus(persons, files, categories, redirects, disambiguations, other_pages=other)
    corpus.list_pages["List of stand-in people"] = list_page_html(corpus, persons[: min(len(persons), 20)])
    return corpus


def list_page_html(corpus: Corpus, people: list[Person]) -> str:
    """A "List of ..." article in current Wikipedia markup, with everything a parser must skip."""
    rows = "\n".join(
        f'<tr><td><a href="/wiki/{p.title.replace(" ", "_")}" title="{p.title}">{p.title}</a></td>'
        f"<td>{p.birth_year or ''}</td><td>"
        f'<a href="/wiki/United_States" title="United States">United States</a></td></tr>'
        for p in people
    )
    first = people[0].title
    redirect_alias = next((k for k, v in corpus.redirects.items() if v == first), first)
    return f"""<div class="mw-content-ltr mw-parser-output" lang="en" dir="ltr">
<div class="shortdescription nomobile noexcerpt noprint searchaux" style="display:none">Wikimedia list article</div>
<div role="note" class="hatnote navigation-not-searchable">For the award, see <a href="/wiki/Turing_Award">Turing Award</a>.</div>
<table class="infobox vcard"><tr><td><a href="/wiki/Ada_Nobody" title="Ada Nobody">Infobox person</a></td></tr></table>
<p>This is a list of people in the stand-in, notable for work in
<a href="/wiki/Computer_science" title="Computer science">computer science</a>. See also
<a href="/wiki/{redirect_alias.replace(" ", "_")}" title="{redirect_alias}">{redirect_alias}</a>
and <a href="/wiki/John_Smith" title="John Smith">John Smith</a>.<sup id="cite_ref-1" class="reference"><a href="#cite_note-1">[1]</a></sup></p>
<figure class="mw-default-size" typeof="mw:File/Thumb"><a href="/wiki/File:Example.jpg" class="mw-file-description"><img src="//upload.wikimedia.org/x.jpg" class="mw-file-element"></a><figcaption><a href="/wiki/Caption_Person">Caption Person</a></figcaption></figure>
<div class="mw-heading mw-heading2"><h2 id="People">People</h2><span class="mw-editsection">[<a href="/w/index.php?title=List&amp;action=edit&amp;section=1" title="Edit section: People"><span>edit</span></a>]</span></div>
<table class="wikitable sortable"><tbody><tr><th>Name</th><th>Born</th><th>Country</th></tr>
{rows}
<tr><td><a href="/w/index.php?title=Red_Linked_Person&amp;action=edit&amp;redlink=1" class="new" title="Red Linked Person (page does not exist)">Red Linked Person</a></td><td></td><td></td></tr>
<tr><td><a href="/wiki/Category:Stand-in_people" title="Category:Stand-in people">category link</a> <a href="/wiki/Wikipedia:Notability" title="Wikipedia:Notability">policy</a> <a href="https://example.org/" class="external text">external</a></td><td></td><td></td></tr>
</tbody></table>
<div class="mw-heading mw-heading2"><h2 id="See_also">See also</h2></div>
<ul><li><a href="/wiki/See_Also_Person" title="See Also Person">See Also Person</a></li></ul>
<div class="mw-heading mw-heading2"><h2 id="References">References</h2></div>
<div class="reflist"><ol class="references"><li id="cite_note-1"><a href="/wiki/Reference_Person">Reference Person</a></li></ol></div>
<div class="navbox-styles"></div><div role="navigation" class="navbox" aria-labelledby="Computer_science"><table class="nowraplinks"><tr><td><a href="/wiki/Navbox_Person" title="Navbox Person">Navbox Person</a></td></tr></table></div>
</div>"""
