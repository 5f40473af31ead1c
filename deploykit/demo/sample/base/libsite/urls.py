from django.contrib import admin
from django.urls import path

from library import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health/", views.health, name="health"),
    path("api/books/", views.books, name="books"),
    path("admin/", admin.site.urls),
]
