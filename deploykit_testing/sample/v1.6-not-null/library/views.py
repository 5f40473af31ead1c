import time

from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from libsite.version import APP_VERSION

from .models import Author, Book


@require_GET
def index(request):
    return JsonResponse({"app": "library", "version": APP_VERSION, "books": Book.objects.count()})


@require_GET
def health(request):
    try:
        Book.objects.exists()
    except Exception as exc:  # the database is what this check is about
        return JsonResponse(
            {"status": "error", "version": APP_VERSION, "error": f"{type(exc).__name__}: {exc}"},
            status=500,
        )
    return JsonResponse({"status": "ok", "version": APP_VERSION})


@csrf_exempt
@require_http_methods(["GET", "POST"])
def books(request):
    if request.method == "GET":
        rows = Book.objects.select_related("author").order_by("id")
        return JsonResponse({"books": [book.as_dict() for book in rows]})
    title = request.POST.get("title", "").strip()
    author_name = request.POST.get("author", "").strip()
    if not title or not author_name:
        return JsonResponse({"error": "title and author are required"}, status=400)
    with transaction.atomic():
        author, _ = Author.objects.get_or_create(name=author_name)
        book = Book(title=title, author=author, copies=int(request.POST.get("copies") or 1))
        cover = request.FILES.get("cover")
        if cover is not None:
            book.cover.save(cover.name, cover, save=False)
        book.save()
        # a slow write (tests: a write in flight when writes are frozen): seconds before the commit
        time.sleep(min(float(request.POST.get("sleep") or 0), 30))
    return JsonResponse(book.as_dict(), status=201)
