"""The template library (seeds 000/001/004) and its ratings."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, SoftDeleteMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import (
    CreatedByMixin,
    OptionalTenantMixin,
    fk,
    fts_index,
    gin_index,
    partial_index,
)
from turbocat.db.types import GUID, JSONDoc, StrList, enum_type
from turbocat.domain.enums import TemplateDifficulty, TemplateType


class TemplateRow(
    IdMixin, TimestampMixin, SoftDeleteMixin, OptionalTenantMixin, CreatedByMixin, Base
):
    """A reusable agent, workflow or step definition.

    Official templates have no organization (``organization_id`` NULL) and are visible to all;
    an organization's own template is visible to others only when ``is_public``.
    ``rating_average``/``rating_count`` are kept in step with ``template_ratings``.
    """

    __tablename__ = "templates"
    __table_args__ = (
        CheckConstraint("rating_average >= 0 AND rating_average <= 5", name="rating_average_range"),
        CheckConstraint("usage_count >= 0 AND rating_count >= 0", name="counters_non_negative"),
        partial_index("ix_templates_category", "category", where="deleted_at IS NULL"),
        partial_index("ix_templates_type", "type", where="deleted_at IS NULL"),
        partial_index(
            "ix_templates_is_official", "is_official", where="deleted_at IS NULL AND is_official"
        ),
        partial_index(
            "ix_templates_is_public", "is_public", where="deleted_at IS NULL AND is_public"
        ),
        Index("ix_templates_usage_count", "usage_count"),
        Index("ix_templates_category_rating_average", "category", "rating_average", "usage_count"),
        gin_index("templates", "tags"),
        fts_index("templates"),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[TemplateType] = mapped_column(enum_type(TemplateType, "template_type"))
    category: Mapped[str] = mapped_column(String(100))
    template_data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    tags: Mapped[list[str]] = mapped_column(StrList, default=list)
    is_official: Mapped[bool] = mapped_column(Boolean, default=False)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    rating_average: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("0.00"))
    rating_count: Mapped[int] = mapped_column(Integer, default=0)
    difficulty: Mapped[TemplateDifficulty] = mapped_column(
        enum_type(TemplateDifficulty, "template_difficulty"), default=TemplateDifficulty.BEGINNER
    )
    estimated_time_savings: Mapped[str | None] = mapped_column(String(100))
    required_integrations: Mapped[list[str]] = mapped_column(StrList, default=list)
    optional_integrations: Mapped[list[str]] = mapped_column(StrList, default=list)
    configuration_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)


class TemplateRatingRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """One user's rating of a template (one per user); owned by the rater's organization."""

    __tablename__ = "template_ratings"
    __table_args__ = (
        UniqueConstraint("template_id", "user_id"),
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating_range"),
        {"info": {"rls": "tenant"}},
    )

    template_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("templates.id", "CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("users.id", "CASCADE"), index=True)
    rating: Mapped[int] = mapped_column(SmallInteger)
    review: Mapped[str | None] = mapped_column(Text)
