# An irreversible data migration: RunPython without reverse_code.
# Titles are rewritten in place; the originals cannot be recomputed.

from django.db import migrations


def normalize_titles(apps, schema_editor):
    Book = apps.get_model("library", "Book")
    for book in Book.objects.all():
        title = " ".join(book.title.split()).upper()
        if title != book.title:
            book.title = title
            book.save(update_fields=["title"])


class Migration(migrations.Migration):

    dependencies = [
        ('library', '0004_book_isbn'),
    ]

    operations = [
        migrations.RunPython(normalize_titles),
    ]
