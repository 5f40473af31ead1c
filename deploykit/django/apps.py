from django.apps import AppConfig


class DeploykitConfig(AppConfig):
    name = "deploykit.django"
    label = "deploykit"
    verbose_name = "deploykit"
