# Squashed from 0001_initial .. 0004_book_isbn (manage.py squashmigrations library 0004).
# A database that applied the four gets this one recorded as applied; a new
# database runs this one. The four files are deleted in this release.

import django.db.models.deletion
from django.db import migrations, models

DEFAULT_GENRES = ["fiction", "non-fiction"]


def create_default_genres(apps, schema_editor):
    Genre = apps.get_model("library", "Genre")
    Book = apps.get_model("library", "Book")
    db = schema_editor.connection.alias
    genres = {name: Genre.objects.using(db).get_or_create(name=name)[0] for name in DEFAULT_GENRES}
    Book.objects.using(db).filter(genre__isnull=True).update(genre=genres["fiction"])


def remove_default_genres(apps, schema_editor):
    Genre = apps.get_model("library", "Genre")
    Book = apps.get_model("library", "Book")
    db = schema_editor.connection.alias
    Book.objects.using(db).filter(genre__name__in=DEFAULT_GENRES).update(genre=None)
    Genre.objects.using(db).filter(name__in=DEFAULT_GENRES).delete()


class Migration(migrations.Migration):

    replaces = [
        ('library', '0001_initial'),
        ('library', '0002_genre_book_genre'),
        ('library', '0003_default_genres'),
        ('library', '0004_book_isbn'),
    ]

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='Author',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200)),
            ],
        ),
        migrations.CreateModel(
            name='Genre',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
            ],
        ),
        migrations.CreateModel(
            name='Book',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('title', models.CharField(max_length=200)),
                ('cover', models.FileField(blank=True, upload_to='covers/')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('author', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='books', to='library.author')),
                ('genre', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='books', to='library.genre')),
                ('isbn', models.CharField(blank=True, default='', max_length=20)),
            ],
        ),
        migrations.RunPython(create_default_genres, reverse_code=remove_default_genres),
    ]
