from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Workflow runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Workflows live in each installed app's workflows.py, found like admin.py.
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("workflows")
        # Workflows can also live in modules outside the installed apps.
        import importlib

        from django.conf import settings

        for module in getattr(settings, "STEPFLOW_WORKFLOW_MODULES", []):
            importlib.import_module(module)
