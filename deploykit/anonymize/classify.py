"""Privacy by default: the columns that look personal and have no rule (not even an explicit keep).

A column is personal-looking, first rule that matches, when:

1. its model field is an EmailField, a GenericIPAddressField or an IPAddressField (or a subclass: the
   field's MRO is read), or its database type is inet/cidr;
2. its name says so (words of the name, snake_case or camelCase): email, password, token/secret/api key,
   IBAN/account number/SSN/tax id/passport, phone/mobile/fax, birth/dob, first/last name, username,
   postcode/zip, city, street/address, a person's name (`name` alone, full_name, customer_name, ...);
   only where the type can hold it (text; a number for phones, account numbers and postcodes whose name
   ends with that word; a date for birth dates), never a column named like an id (`city_id`);
3. it is a text or JSON field of the user model (AUTH_USER_MODEL), files aside: whatever the app keeps
   about its users is theirs.

Not flagged: relations (the value is another row's id; that row's table is classified itself), the user
model's booleans and dates of the system (last_login, date_joined: when, not who), files (their paths go
with `media:`), bytea, and the tables of Django's own bookkeeping that hold no person (django_migrations,
contenttypes, permissions, groups, sites). Django's sessions (session_key, session_data) and the admin
log's object_repr (an object's str(), often a person's name) are flagged with reasons of their own.
A false alarm costs one `keep`; a miss would copy a person.

Each finding carries a suggested rule in the YAML surface form:
email -> email, ip -> ip, phone -> phone, names -> {faker: first_name|last_name|name},
street/city/postcode -> {faker: street_address|city|postcode} (a numeric postcode: format),
password -> {fixed: "!"} (Django's unusable password), tokens/secrets/usernames -> {hash: {}},
IBAN/account numbers/ids -> format (same length and shape), birth dates -> null
({fixed: "1970-01-01"} when NOT NULL), other text of the user model -> format, its JSON -> null
({fixed: "{}"} when NOT NULL; so is any personal-looking JSON column: a {json: {PATH: RULE}} rule keeps
its shape). A fixed suggestion for a unique column becomes {hash: {}}.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ..config.rules import parse_rule
from .catalog import Catalog, Column

EMAIL_FIELDS = {"EmailField"}
IP_FIELDS = {"GenericIPAddressField", "IPAddressField"}
FILE_FIELDS = {"FileField", "ImageField", "FilePathField"}
RELATIONS = {"ForeignKey", "OneToOneField", "ManyToManyField"}

NOT_PERSONAL_TABLES = {"django_migrations"}
NOT_PERSONAL_MODELS = {"contenttypes.ContentType", "auth.Permission", "auth.Group", "sites.Site"}
ID_WORDS = {"id", "pk", "uuid", "ids"}
PERSON_WORDS = {
    "customer", "client", "contact", "author", "owner", "person", "patient", "employee", "member", "recipient",
    "sender", "billing", "shipping", "holder", "guest", "buyer", "seller", "applicant", "student", "teacher",
    "parent", "spouse", "emergency", "beneficiary", "driver", "passenger", "full", "display", "nick", "middle",
    "real", "legal", "maiden", "account", "user", "profile", "subscriber", "tenant", "visitor", "reviewer"}


@dataclass(frozen=True)
class Finding:
    """A personal-looking column without a rule, and the rule suggested for it (YAML surface form)."""

    table: str
    column: str
    field: str | None  # app_label.Model.field stored in the column, when a model has one there
    why: str
    suggestion: Any

    @property
    def key(self) -> str:
        """The key a rule for it is written under: the field when a model has one, else table.column."""
        return self.field or f"{self.table}.{self.column}"

    def rule(self) -> dict:
        """The suggestion as a canonical rule."""
        return parse_rule(self.suggestion)

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def words(name: str) -> list[str]:
    """The words of a column name: 'firstName' and 'first_name' -> ['first', 'name']; 'address2' -> ['address', '2']."""
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def _pairs(ws: list[str]) -> set[tuple[str, str]]:
    return set(zip(ws, ws[1:]))


@dataclass(frozen=True)
class Category:
    """Words that make a column personal-looking, what they mean, and the rule suggested for it."""

    name: str
    why: str
    words: frozenset = frozenset()
    pairs: frozenset = frozenset()
    families: frozenset = frozenset({"text"})
    whole: frozenset = frozenset()  # matched only as the whole name

    def matches(self, ws: list[str]) -> bool:
        if self.whole and "_".join(ws) in self.whole:
            return True
        return bool(self.words & set(ws)) or bool(self.pairs & _pairs(ws))

    def vocabulary(self) -> set[str]:
        return set(self.words) | {b for _, b in self.pairs}


def _c(name, why, words=(), pairs=(), families=("text",), whole=()) -> Category:
    return Category(name, why, frozenset(words), frozenset(pairs), frozenset(families), frozenset(whole))


# first match wins: email_address is an email, ip_address an IP, zip_code a postcode, street_name a street
CATEGORIES = (
    _c("email", "named like an email address", {"email", "emails", "emailaddress"}, {("e", "mail")},
       whole={"mail"}),
    _c("ip", "named like an IP address", {"ip", "ipv4", "ipv6", "ipaddr", "ipaddress"}, families=("text", "inet")),
    _c("password", "named like a password", {"password", "passwd", "pwd", "passphrase", "passcode"}),
    _c("secret", "named like a token or secret", {"token", "secret", "apikey", "otp", "totp"},
       {("api", "key"), ("secret", "key"), ("private", "key"), ("access", "key"), ("session", "key"),
        ("auth", "key"), ("signing", "key"), ("encryption", "key"), ("recovery", "code")}),
    _c("device", "named like a device's address", pairs={("mac", "address")}),
    _c("account", "named like a bank account or an official number",
       {"iban", "ssn", "passport", "taxid", "accountnumber", "nino", "bsn"},
       {("account", "number"), ("account", "no"), ("acct", "number"), ("acct", "no"), ("card", "number"),
        ("credit", "card"), ("tax", "id"), ("tax", "number"), ("national", "id"), ("social", "security"),
        ("bank", "account"), ("routing", "number"), ("sort", "code"), ("license", "number"),
        ("licence", "number")}, families=("text", "number")),
    _c("phone", "named like a phone number", {"phone", "phones", "mobile", "telephone", "tel", "fax", "cellphone",
                                              "msisdn", "phonenumber"}, families=("text", "number")),
    _c("birth", "named like a birth date", {"birth", "birthday", "birthdate", "dob"}, families=("text", "date")),
    _c("first_name", "named like a first name", {"firstname", "forename", "givenname"},
       {("first", "name"), ("given", "name")}),
    _c("last_name", "named like a last name", {"lastname", "surname", "familyname"},
       {("last", "name"), ("family", "name"), ("maiden", "name")}),
    _c("username", "named like a user name", whole={"username", "user_name", "login", "nickname", "screen_name"}),
    _c("postcode", "named like a postcode", {"zip", "zipcode", "postcode", "postalcode"},
       {("postal", "code"), ("post", "code")}, families=("text", "number")),
    _c("city", "named like a city", {"city", "town"}),
    _c("street", "named like a street address", {"street", "address", "addr"}, {("address", "line")}),
    _c("name", "named like a person's name (keep it if it names something else)", {"fullname", "displayname"},
       {(w, "name") for w in PERSON_WORDS}, whole={"name"}),
)

SUGGESTIONS = {
    "email": "email", "ip": "ip", "password": {"fixed": "!"}, "secret": {"hash": {}}, "device": "format",
    "account": "format", "phone": "phone", "first_name": {"faker": "first_name"},
    "last_name": {"faker": "last_name"}, "username": {"hash": {}}, "postcode": {"faker": "postcode"},
    "city": {"faker": "city"}, "street": {"faker": "street_address"}, "name": {"faker": "name"},
}


def _category(column: Column) -> Category | None:
    ws = words(column.name)
    if not ws:
        return None
    family = column.family
    for cat in CATEGORIES:
        if not cat.matches(ws):
            continue
        if ws[-1] in ID_WORDS and cat.name != "account":
            return None  # city_id, phone_pk: a reference to another row, not the value
        if family not in cat.families and family != "json":
            continue
        if family == "number" and ws[-1] not in cat.vocabulary():
            continue  # phone_count, zip_rank: a number about it, not it
        return cat
    return None


def _birth(column: Column) -> Any:
    return {"fixed": "1970-01-01"} if column.is_null_allowed is False else None


def _json(column: Column) -> Any:
    """A whole JSON value: NULL, or an empty object where NULL is not allowed (a path rule keeps more)."""
    return {"fixed": "{}"} if column.is_null_allowed is False else None


def _suggest(cat: Category, column: Column) -> Any:
    if column.family == "json":
        return _json(column)
    if cat.name == "birth":
        return _birth(column)
    if cat.name == "postcode" and column.family == "number":
        return "format"
    return SUGGESTIONS[cat.name]


def _special(column: Column) -> tuple[str, Any] | None:
    """Django's own tables whose meaning the names do not tell."""
    label = column.model["label"] if column.model else None
    if label == "sessions.Session" and column.name == "session_data":
        return "a session's data: whose login it is, and whatever the app keeps in it", {"fixed": ""}
    if label == "admin.LogEntry" and column.name == "object_repr":
        return "the admin log's str() of the changed object, often a person's name or email", "format"
    return None


def _why_and_rule(cat: Catalog, column: Column) -> tuple[str, Any] | None:
    field, model = column.field, column.model
    if column.table in NOT_PERSONAL_TABLES or (model and model["label"] in NOT_PERSONAL_MODELS):
        return None
    special = _special(column)
    if special:
        return special
    if field is not None:
        classes = set(field.get("classes") or [field.get("class")])
        if field.get("related_model") or classes & RELATIONS:
            return None
        if classes & EMAIL_FIELDS:
            kind = field["class"]
            return ("an EmailField" if kind == "EmailField" else f"a {kind} (an EmailField)"), "email"
        if classes & IP_FIELDS:
            return f"a {field['class']}", "ip"
        if classes & FILE_FIELDS:
            return None
    if column.family == "inet":
        return f"an {column.data_type or 'inet'} column", "ip"
    found = _category(column)
    user = bool(model and model.get("user_model")) and column.field is not None
    if found is not None:
        why = found.why + (" (a field of the user model)" if user else "")
        if column.family == "json":
            why += "; JSON: {json: {PATH: RULE}} masks it by path instead"
        return why, _suggest(found, column)
    if user and not (field or {}).get("primary_key"):
        if column.family == "text":
            return f"a text field of the user model ({model['label']})", "format"
        if column.family == "json":
            return f"a JSON field of the user model ({model['label']}); {{json: {{PATH: RULE}}}} masks it by path " \
                "instead", _json(column)
    return None


def classify(model_columns: Any, db_columns: dict, resolved: dict[str, dict[str, dict]]) -> list[Finding]:
    """The personal-looking columns of the source that `resolved` ({table: {column: rule}}) gives no rule,
    in table and column order."""
    cat = Catalog.build(model_columns, db_columns)
    findings = []
    for table in sorted(cat.tables):
        ruled = resolved.get(table) or {}
        for column in cat.tables[table]:
            if column.name in ruled:
                continue
            found = _why_and_rule(cat, column)
            if found is None:
                continue
            why, suggestion = found
            if column.unique and isinstance(suggestion, dict) and "fixed" in suggestion:
                suggestion = {"hash": {}}  # one fixed value in every row would break the unique constraint
            findings.append(Finding(table, column.name, column.field_key, why, suggestion))
    return findings
