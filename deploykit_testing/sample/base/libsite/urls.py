from django.contrib import admin
from django.urls import path

from libsite import envinfo
from library import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health/", views.health, name="health"),
    path("env/", envinfo.env, name="env"),
    path("api/books/", views.books, name="books"),
    path("admin/", admin.site.urls),
]
