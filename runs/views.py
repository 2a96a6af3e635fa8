from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    return HttpResponse("stepflow")
