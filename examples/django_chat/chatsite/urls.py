from __future__ import annotations

from chat import views
from django.contrib.auth import views as auth_views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("rooms/<slug:room>/messages", views.post_message, name="post_message"),
    path("cablecar.js", views.cablecar_js, name="cablecar_js"),
]
