from django.urls import path

from . import api

urlpatterns = [
    path("runs/", api.start, name="api_start"),
    path("runs/<int:run_id>/", api.detail, name="api_run"),
    path("runs/<int:run_id>/resume/", api.resume, name="api_resume"),
    path("runs/<int:run_id>/retry/", api.retry, name="api_retry"),
    path("runs/<int:run_id>/cancel/", api.cancel, name="api_cancel"),
]
