from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    verbose_name = "DSAR cases"

    def ready(self) -> None:
        from . import pipeline

        pipeline.connect()
