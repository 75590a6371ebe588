//! On-call schedules, their rotations and overrides, on every backend.

use super::*;
use klaxon::domain::schedule::{
    OverrideRecord, RestrictionFields, RotationFields, RotationKind, RotationRecord, ScheduleRecord,
};
use klaxon::domain::{User, UserFields};

on_every_backend!(
    schedules_are_kept_by_name_and_changed,
    rotations_keep_their_fields_order_and_place_until_retired,
    overrides_are_found_by_the_range_they_overlap_until_retired,
    users_are_found_by_handle,
    schedules_rotations_and_overrides_are_never_deleted,
);

async fn person(store: &dyn Store, handle: &str) -> User {
    let fields = UserFields {
        handle: handle.into(),
        name: handle.into(),
        email: format!("{handle}@example.com"),
        ..UserFields::default()
    };
    store
        .create_user(&User::new(fields, minute(0)).unwrap())
        .await
        .unwrap()
}

/// A UTC schedule `primary`, and users `asha` and `ben`.
async fn primary_with_asha_and_ben(store: &dyn Store) -> (ScheduleRecord, User, User) {
    let schedule = ScheduleRecord::new("primary", "UTC", minute(0)).unwrap();
    store.create_schedule(&schedule).await.unwrap();
    let (asha, ben) = (person(store, "asha").await, person(store, "ben").await);
    (schedule, asha, ben)
}

fn rotation(schedule: &ScheduleRecord, name: &str, participants: Vec<Uuid>) -> RotationRecord {
    let fields = RotationFields {
        kind: RotationKind::Daily,
        shift_length: 1,
        start: "2026-03-06T09:00:00".into(),
        participants,
        priority: 0,
        restrictions: vec![RestrictionFields {
            weekdays: vec!["mon".into(), "fri".into()],
            start: "09:00".into(),
            end: "17:00".into(),
        }],
    };
    RotationRecord::new(schedule.id, name, fields, minute(0)).unwrap()
}

async fn schedules_are_kept_by_name_and_changed(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let primary = ScheduleRecord::new("primary", "america/new_york", minute(0)).unwrap();
    assert_eq!(
        primary.time_zone, "America/New_York",
        "the database's spelling"
    );
    assert_eq!(store.create_schedule(&primary).await.unwrap(), primary);
    let twin = ScheduleRecord::new("primary", "UTC", minute(0)).unwrap();
    assert!(matches!(
        store.create_schedule(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    let backup = ScheduleRecord::new("backup", "Europe/London", minute(0)).unwrap();
    store.create_schedule(&backup).await.unwrap();
    assert_eq!(
        store.schedules().await.unwrap(),
        [backup.clone(), primary.clone()]
    );

    let changed = primary
        .changed(None, Some("Australia/Lord_Howe"), minute(1))
        .unwrap();
    assert_eq!(store.update_schedule(&changed).await.unwrap(), changed);
    assert_eq!(store.schedule(primary.id).await.unwrap(), changed);
    let clash = changed.changed(Some("backup"), None, minute(2)).unwrap();
    assert!(matches!(
        store.update_schedule(&clash).await,
        Err(StoreError::Duplicate(_))
    ));
    let ghost = ScheduleRecord::new("ghost", "UTC", minute(0)).unwrap();
    assert!(matches!(
        store.update_schedule(&ghost).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.schedule(ghost.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn rotations_keep_their_fields_order_and_place_until_retired(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let (schedule, asha, ben) = primary_with_asha_and_ben(store.as_ref()).await;
    // A user may take more than one turn.
    let first = rotation(&schedule, "weekdays", vec![asha.id, ben.id, asha.id]);
    assert_eq!(store.add_rotation(&first).await.unwrap(), first);
    let second = rotation(&schedule, "nights", vec![ben.id]);
    store.add_rotation(&second).await.unwrap();
    let orphan = rotation(
        &ScheduleRecord::new("ghost", "UTC", minute(0)).unwrap(),
        "x",
        vec![asha.id],
    );
    assert!(matches!(
        store.add_rotation(&orphan).await,
        Err(StoreError::NotFound)
    ));

    let mut replaced = first.clone();
    replaced.name = "weekdays, weekly".into();
    replaced.fields.kind = RotationKind::Weekly;
    replaced.fields.priority = 2;
    replaced.fields.restrictions.clear();
    replaced.updated_at = minute(1);
    assert_eq!(store.replace_rotation(&replaced).await.unwrap(), replaced);
    assert_eq!(
        store.rotations(schedule.id).await.unwrap(),
        [replaced.clone(), second.clone()],
        "a replaced rotation keeps its place"
    );

    let retired = store
        .retire_rotation(schedule.id, first.id, minute(2))
        .await
        .unwrap();
    assert_eq!(retired.retired_at, Some(minute(2)));
    assert_eq!(store.rotations(schedule.id).await.unwrap(), [second]);
    for gone in [
        store
            .retire_rotation(schedule.id, first.id, minute(3))
            .await,
        store.replace_rotation(&replaced).await,
    ] {
        assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
    }
    assert!(matches!(
        store.rotations(Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));
}

async fn overrides_are_found_by_the_range_they_overlap_until_retired(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let (schedule, asha, ben) = primary_with_asha_and_ben(store.as_ref()).await;
    let cover = |start, end| {
        OverrideRecord::new(
            schedule.id,
            ben.id,
            Some(asha.id),
            (minute(start), minute(end)),
            minute(0),
        )
        .unwrap()
    };
    let (early, late) = (cover(10, 20), cover(30, 40));
    assert_eq!(store.add_override(&early).await.unwrap(), early);
    store.add_override(&late).await.unwrap();
    let within = |from, to| {
        let store = store.clone();
        let schedule = schedule.id;
        async move {
            store
                .overrides(schedule, from, to)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(within(None, None).await, [early.id, late.id]);
    assert_eq!(
        within(Some(minute(20)), None).await,
        [late.id],
        "ends at from"
    );
    assert_eq!(
        within(None, Some(minute(30))).await,
        [early.id],
        "starts at to"
    );
    assert_eq!(
        within(Some(minute(15)), Some(minute(35))).await,
        [early.id, late.id]
    );
    let layers = store
        .layers(schedule.id, minute(25), minute(45))
        .await
        .unwrap();
    assert_eq!(
        (layers.schedule, layers.overrides),
        (schedule.clone(), vec![late.clone()])
    );

    let retired = store
        .retire_override(schedule.id, early.id, minute(1))
        .await
        .unwrap();
    assert_eq!(retired.retired_at, Some(minute(1)));
    assert_eq!(within(None, None).await, [late.id]);
    assert!(matches!(
        store
            .retire_override(schedule.id, early.id, minute(2))
            .await,
        Err(StoreError::NotFound)
    ));
    let elsewhere = OverrideRecord {
        schedule_id: Uuid::now_v7(),
        ..cover(0, 1)
    };
    assert!(matches!(
        store.add_override(&elsewhere).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.layers(Uuid::now_v7(), minute(0), minute(1)).await,
        Err(StoreError::NotFound)
    ));
}

async fn users_are_found_by_handle(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let asha = person(store.as_ref(), "asha").await;
    person(store.as_ref(), "ben").await;
    let found = store
        .users_by_handle(&["asha".into(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(found, [asha]);
    assert!(store.users_by_handle(&[]).await.unwrap().is_empty());
}

async fn schedules_rotations_and_overrides_are_never_deleted(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let asha = person(store.as_ref(), "asha").await;
    let schedule = ScheduleRecord::new("primary", "UTC", minute(0)).unwrap();
    store.create_schedule(&schedule).await.unwrap();
    store
        .add_rotation(&rotation(&schedule, "r", vec![asha.id]))
        .await
        .unwrap();
    let added = OverrideRecord::new(
        schedule.id,
        asha.id,
        None,
        (minute(0), minute(1)),
        minute(0),
    );
    store.add_override(&added.unwrap()).await.unwrap();
    for table in ["overrides", "rotations", "schedules"] {
        let statement = format!("delete from {table}");
        let error = raw(backend, &db.url, &statement)
            .await
            .expect_err(&statement);
        assert!(
            error.to_string().contains("never deletes"),
            "{table}: {error}"
        );
    }
}
