import { Button, Group, NumberInput, Select, Stack, Switch, Text, TextInput } from "@mantine/core";
import { useEffect, useState } from "react";
import { useNavigate } from "react-router-dom";
import { ProblemAlert } from "@/components/ui/Problem";
import { useDatasets, useVersions } from "@/features/datasets/api/datasets";
import { useSubmitJob, useTeams, useTemplates } from "../api/training";
import { changed, defaults, validate, type ParamSpec, type ParamValues, type Template } from "../params";

function ParamField({ name, spec, value, error, onChange }: { name: string; spec: ParamSpec; value: ParamValues[string] | undefined; error?: string; onChange: (v: ParamValues[string]) => void }) {
  if (spec.type === "choice") {
    return <Select label={name} description={spec.description} data={(spec.choices ?? []).map(String)} value={String(value ?? "")} onChange={(v) => onChange(v ?? "")} error={error} allowDeselect={false} />;
  }
  if (spec.type === "bool") {
    return <Switch label={name} description={spec.description} checked={Boolean(value)} onChange={(e) => onChange(e.currentTarget.checked)} />;
  }
  return (
    <NumberInput
      label={name}
      description={`${spec.description}${spec.min !== null ? ` · min ${spec.min}` : ""}${spec.max !== null ? ` · max ${spec.max}` : ""}`}
      value={typeof value === "number" ? value : ""}
      onChange={(v) => onChange(typeof v === "number" ? v : Number.NaN)}
      min={spec.min ?? undefined}
      max={spec.max ?? undefined}
      step={spec.type === "int" ? 1 : undefined}
      decimalScale={spec.type === "int" ? 0 : 8}
      error={error}
    />
  );
}

/** The form a template's hyperparameters generate, with the data it trains on. */
export function TemplateForm({ template }: { template: Template }) {
  const [values, setValues] = useState<ParamValues>(() => defaults(template));
  const [datasetId, setDatasetId] = useState<string | null>(null);
  const [version, setVersion] = useState<string | null>(null);
  const [team, setTeam] = useState<string | null>(null);
  const teams = useTeams();
  const [modelName, setModelName] = useState("");
  const [trainSplit, setTrainSplit] = useState("train");
  const [evalSplit, setEvalSplit] = useState("val");
  const datasets = useDatasets();
  const versions = useVersions(datasetId ?? "");
  const submit = useSubmitJob();
  const navigate = useNavigate();
  useEffect(() => setValues(defaults(template)), [template]);
  const problems = validate(template, values);
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        submit.mutate(
          {
            template: template.name,
            team: team ?? teams.data?.[0]?.name ?? "",
            model_name: modelName || null,
            params: changed(template, values),
            dataset: { dataset_id: datasetId ?? "", version: version ? Number(version) : null, train_split: trainSplit, eval_split: evalSplit },
          } as Parameters<typeof submit.mutate>[0],
          { onSuccess: (job) => navigate(`/training/${job.id}`) },
        );
      }}
    >
      <Stack gap="xs">
        <Text size="sm" c="dimmed">
          {template.description}
        </Text>
        <Group grow>
          <Select label="Dataset" data={(datasets.data?.items ?? []).map((d) => ({ value: d.id, label: d.name }))} value={datasetId} onChange={setDatasetId} required />
          <Select label="Version" placeholder="latest" clearable data={(datasets.data && datasetId ? versions.data?.items ?? [] : []).map((v) => String(v.version))} value={version} onChange={setVersion} />
          <TextInput label="Train split" value={trainSplit} onChange={(e) => setTrainSplit(e.currentTarget.value)} />
          <TextInput label="Eval split" value={evalSplit} onChange={(e) => setEvalSplit(e.currentTarget.value)} />
        </Group>
        <Group grow>
          <Select
            label="Team"
            data={(teams.data ?? []).map((t) => t.name)}
            value={team ?? teams.data?.[0]?.name ?? null}
            onChange={setTeam}
            allowDeselect={false}
            error={teams.data && teams.data.length === 0 ? "no team yet: an admin creates one" : undefined}
          />
          <TextInput label="Model name" placeholder="<dataset>-<template>" value={modelName} onChange={(e) => setModelName(e.currentTarget.value)} />
        </Group>
        <div className="param-grid">
          {Object.entries(template.params).map(([name, spec]) => (
            <ParamField key={name} name={name} spec={spec} value={values[name]} error={problems[name]} onChange={(v) => setValues({ ...values, [name]: v })} />
          ))}
        </div>
        <Button type="submit" disabled={!datasetId || Object.keys(problems).length > 0} loading={submit.isPending}>
          Start training
        </Button>
        <ProblemAlert error={submit.error} />
      </Stack>
    </form>
  );
}

export function SubmitJob() {
  const templates = useTemplates();
  const [name, setName] = useState<string | null>(null);
  const list = templates.data?.items ?? [];
  const template = list.find((t) => t.name === (name ?? list[0]?.name));
  return (
    <Stack gap="xs">
      <ProblemAlert error={templates.error} />
      <Select label="Template" data={list.map((t) => ({ value: t.name, label: `${t.name} (${t.task})` }))} value={template?.name ?? null} onChange={setName} allowDeselect={false} w={320} />
      {template ? <TemplateForm key={template.name} template={template} /> : null}
    </Stack>
  );
}
