from django.contrib.auth import views as auth_views
from django.urls import path

from . import views
from .ui import schedules as schedules_ui

urlpatterns = [
    path("", views.history, name="history"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/compare/", views.compare, name="compare"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/live/", views.run_live, name="run_live"),
    path("runs/<int:run_id>/children/", views.run_children, name="run_children"),
    path("runs/<int:run_id>/actions/<slug:action>/", views.run_action, name="run_action"),
    path("workflows/", views.workflows, name="workflows"),
    path("workflows/<slug:name>/", views.workflow_detail, name="workflow_detail"),
    path("schedules/", schedules_ui.schedule_list, name="schedules"),
    path("schedules/preview/", schedules_ui.schedule_preview, name="schedule_preview"),
    path("schedules/params/", schedules_ui.schedule_params, name="schedule_params"),
    path("schedules/<int:schedule_id>/", schedules_ui.schedule_detail, name="schedule_detail"),
    path(
        "schedules/<int:schedule_id>/<slug:action>/",
        schedules_ui.schedule_action,
        name="schedule_action",
    ),
]
