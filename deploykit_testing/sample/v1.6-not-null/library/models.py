from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=200)

    def __str__(self):
        return self.name


class Genre(models.Model):
    name = models.CharField(max_length=100, unique=True)

    def __str__(self):
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    genre = models.ForeignKey(Genre, on_delete=models.SET_NULL, null=True, blank=True, related_name="books")
    isbn = models.CharField(max_length=20, blank=True, default="")
    copies = models.PositiveIntegerField()
    cover = models.FileField(upload_to="covers/", blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.title

    def as_dict(self):
        return {
            "id": self.pk,
            "title": self.title,
            "author": self.author.name,
            "genre": self.genre.name if self.genre_id else None,
            "isbn": self.isbn,
            "copies": self.copies,
            "cover": self.cover.name or "",
        }
