import hashlib
import json
import struct
import zlib

from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand
from django.db import transaction

from library.models import Author, Book

AUTHORS = ["Ursula Le Guin", "Italo Calvino", "Octavia Butler", "Jorge Luis Borges", "Toni Morrison"]


def cover_png(seed):
    """A small 8x8 PNG whose colour and text chunk are unique to ``seed``."""
    r, g, b = hashlib.sha256(seed.encode("utf-8")).digest()[:3]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes((r, g, b)) * 8 for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"Title\x00" + seed.encode("utf-8"))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


class Command(BaseCommand):
    help = "Create sample books (and, with --with-covers, a cover file per book in MEDIA_ROOT/covers/)."

    def add_arguments(self, parser):
        parser.add_argument("--books", type=int, default=10, help="number of books to create (default 10)")
        parser.add_argument("--with-covers", action="store_true", help="save a small distinct cover file per book")
        parser.add_argument("--prefix", default="Book", help="title prefix (default 'Book')")

    def handle(self, *args, **options):
        count = options["books"]
        if count < 0:
            self.stderr.write("--books must be >= 0")
            raise SystemExit(2)
        prefix = options["prefix"]
        start = Book.objects.count()
        created = []
        with transaction.atomic():
            for i in range(count):
                author, _ = Author.objects.get_or_create(name=AUTHORS[(start + i) % len(AUTHORS)])
                book = Book.objects.create(title=f"{prefix} {start + i + 1}", author=author, copies=1)
                if options["with_covers"]:
                    content = cover_png(f"{book.pk}:{book.title}")
                    book.cover.save(f"cover-{book.pk}.png", ContentFile(content), save=True)
                created.append(book)
        summary = {
            "created": len(created),
            "book_ids": [book.pk for book in created],
            "covers": [book.cover.name for book in created if book.cover],
            "authors": Author.objects.count(),
            "books": Book.objects.count(),
        }
        self.stdout.write(json.dumps(summary))
