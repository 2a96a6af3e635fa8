from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.history, name="history"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/compare/", views.compare, name="compare"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/live/", views.run_live, name="run_live"),
    path("runs/<int:run_id>/actions/<slug:action>/", views.run_action, name="run_action"),
    path("workflows/", views.workflows, name="workflows"),
    path("workflows/<slug:name>/", views.workflow_detail, name="workflow_detail"),
]
